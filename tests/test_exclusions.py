"""Kestra's excluded matters that no rule can decide are flagged, never refused."""

from __future__ import annotations

import pytest

from bot.exclusions import flag_exclusions
from bot.rules import load_rules

RULES = load_rules()
KESTRA = RULES.policies["kestra-enterprise"]  # latest_release "1.0"


@pytest.mark.parametrize("text, flags", [
    ("We run Kestra 0.19.4 and the scheduler is stuck.", ["superseded_releases"]),
    ("After upgrading to version 1.0 the UI is slow.", []),
    ("Since release 1.0.2 the UI is slow.", []),
    ("Meeting on 12.03 at 10.30, our server 10.0.0.12 is down.", []),  # dates, times, IPs
    ("Could one of your engineers come on-site next week?", ["on_site"]),
    ("Pourriez-vous intervenir sur site la semaine prochaine ?", ["on_site"]),
    ("Our custom plugin for SAP fails to load.", ["custom_plugins"]),
    ("Notre plugin maison ne se charge plus.", ["custom_plugins"]),
    ("The third-party scheduler we connect to rejects calls.", ["third_party_software"]),
    ("The scheduler is stuck since this morning.", []),
])
def test_flags(text, flags):
    assert [flag.key for flag in flag_exclusions(KESTRA, text)] == flags


def test_no_latest_release_no_version_flag():
    policy = KESTRA.model_copy(update={"latest_release": None})
    assert flag_exclusions(policy, "We run Kestra 0.12.") == ()


def test_astran_has_no_such_patterns():
    assert flag_exclusions(RULES.policies["astran-standard"], "Come on-site with your custom plugin, v0.1") == ()
