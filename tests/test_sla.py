"""Deadlines of both reference policies, computed by hand from the contracts' words.

Kestra Enterprise Support: 1/2/3/5 business days of 9 hours, 09:00-18:00 Monday-Friday at
the fixed offset UTC+1 all year, no French public holiday. Astran: 8/12/24/48 business
hours, 09:00-17:00 Monday-Friday in Paris time (with DST), no holiday excluded.
Each expected value below was counted on a calendar, hour by hour, not computed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.rules import load_rules
from bot.sla import contract_deadline, deadline

RULES = load_rules()


def due(policy: str, level: int, received: str, overrides=None) -> str:
    result = contract_deadline(RULES, policy, overrides, level, datetime.fromisoformat(received))
    return result.local_due.isoformat(timespec="minutes")


KESTRA = [
    # (level, received, due): Christmas and New Year
    (1, "2026-12-24T17:00+01:00", "2026-12-28T17:00+01:00"),  # Thu 1 h, Fri 25 closed, Mon 8 h
    (4, "2026-12-23T12:00+01:00", "2026-12-31T12:00+01:00"),  # 6 + 9 (24th) + 9 + 9 + 9 + 3
    (2, "2026-12-31T10:00+01:00", "2027-01-05T10:00+01:00"),  # 8 h, 1 Jan closed, 9 h, 1 h
    # Easter Monday
    (1, "2026-04-03T16:00+01:00", "2026-04-07T16:00+01:00"),  # Fri 2 h, Mon 6 Apr closed, Tue 7 h
    (3, "2027-03-26T18:30+01:00", "2027-04-01T18:00+01:00"),  # after hours; Mon 29 closed; 3 × 9 h
    # 1 May, 8 May, Ascension (14 May 2026)
    (2, "2026-04-30T12:00+01:00", "2026-05-05T12:00+01:00"),  # 6 h, Fri 1 May closed, 9 h, 3 h
    (4, "2026-05-07T09:00+01:00", "2026-05-15T18:00+01:00"),  # 8 May and 14 May closed
    (1, "2026-05-13T17:59+01:00", "2026-05-15T17:59+01:00"),  # 1 min, Ascension, 8 h 59 min
    # 14 July (a Tuesday in 2026), read at UTC+1 although Paris is at UTC+2 then
    (1, "2026-07-13T14:00+01:00", "2026-07-15T14:00+01:00"),
    (1, "2026-07-01T09:30+02:00", "2026-07-01T18:00+01:00"),  # 08:30 at UTC+1: starts at 09:00
    # 15 August: on a Saturday in 2026 it closes nothing; on a Friday in 2025 it does
    (1, "2026-08-14T17:00+01:00", "2026-08-17T17:00+01:00"),
    (1, "2025-08-14T15:00+01:00", "2025-08-18T15:00+01:00"),
    # 1 November (a Sunday in 2026, a Monday in 2027) and 11 November
    (2, "2026-11-10T09:00+01:00", "2026-11-12T18:00+01:00"),  # Wed 11 closed
    (4, "2027-10-29T09:00+01:00", "2027-11-05T18:00+01:00"),  # Mon 1 Nov closed
    (3, "2027-11-10T12:00+01:00", "2027-11-16T12:00+01:00"),  # Thu 11 closed
    # DST changes of 2026 and 2027 move nothing: the offset is fixed
    (1, "2026-03-27T16:00+01:00", "2026-03-30T16:00+01:00"),
    (1, "2026-10-23T17:00+01:00", "2026-10-26T17:00+01:00"),
    (2, "2027-03-26T12:00+01:00", "2027-03-31T12:00+01:00"),  # 6 h, weekend, Mon 29 closed, 9 h, 3 h
    (1, "2027-10-29T17:30+01:00", "2027-11-02T17:30+01:00"),  # 30 min, Mon 1 Nov closed, 8 h 30
    # exact opening and closing seconds, midnight, an arrival written in UTC
    (1, "2026-11-23T09:00+01:00", "2026-11-23T18:00+01:00"),
    (1, "2026-11-23T18:00+01:00", "2026-11-24T18:00+01:00"),
    (1, "2026-11-24T00:00+01:00", "2026-11-24T18:00+01:00"),
    (1, "2026-11-23T08:00+00:00", "2026-11-23T18:00+01:00"),
    (1, "2026-11-23T10:00+01:00", "2026-11-24T10:00+01:00"),  # the issue's own example
]

ASTRAN = [
    # Christmas and New Year are Business Days under the Terms of Support
    (3, "2026-12-24T15:00+01:00", "2026-12-29T15:00+01:00"),  # 2 h, Fri 25 8 h, Mon 8 h, 6 h
    (1, "2026-12-31T16:00+01:00", "2027-01-01T16:00+01:00"),
    # Easter Monday, 1 May, Ascension, 14 July are Business Days too
    (1, "2026-04-03T16:00+02:00", "2026-04-06T16:00+02:00"),
    (1, "2026-04-30T17:00+02:00", "2026-05-01T17:00+02:00"),  # at closing: starts Fri 1 May 09:00
    (3, "2026-05-13T09:00+02:00", "2026-05-15T17:00+02:00"),
    (2, "2026-07-13T14:00+02:00", "2026-07-15T10:00+02:00"),
    # DST: 29 March and 25 October 2026, 28 March and 31 October 2027
    (2, "2026-03-27T16:00+01:00", "2026-03-31T12:00+02:00"),  # 1 h, Mon 8 h, Tue 3 h
    (1, "2026-10-23T16:00+02:00", "2026-10-26T16:00+01:00"),  # 1 h, Mon 7 h
    (2, "2027-03-26T18:30+01:00", "2027-03-30T13:00+02:00"),  # Mon 8 h, Tue 4 h
    (3, "2027-03-26T10:00+01:00", "2027-03-31T10:00+02:00"),  # 7, 8, 8, 1
    (1, "2027-10-29T16:30+02:00", "2027-11-01T16:30+01:00"),
    (4, "2027-10-29T13:00+02:00", "2027-11-08T13:00+01:00"),  # 4 + 5 × 8 + 4
    # week-ends, closing second
    (1, "2026-11-28T12:00+01:00", "2026-11-30T17:00+01:00"),
    (1, "2026-11-23T17:00+01:00", "2026-11-24T17:00+01:00"),
]


@pytest.mark.parametrize("level, received, expected", KESTRA, ids=[r for _, r, _ in KESTRA])
def test_kestra_enterprise(level, received, expected):
    assert due("kestra-enterprise", level, received) == expected


@pytest.mark.parametrize("level, received, expected", ASTRAN, ids=[r for _, r, _ in ASTRAN])
def test_astran_standard(level, received, expected):
    assert due("astran-standard", level, received) == expected


def test_an_orders_specific_support_overrides_hours_and_targets():
    specific = {"hours": {day: "08:00-19:00" for day in ("mon", "tue", "wed", "thu", "fri")},
                "targets": {"urgent": "4 business hours"}}
    assert due("astran-standard", 1, "2026-11-23T17:30+01:00", specific) == "2026-11-24T10:30+01:00"
    assert due("astran-standard", 2, "2026-11-23T17:30+01:00", specific) == "2026-11-24T18:30+01:00"


def test_standard_support_is_best_effort_without_a_deadline():
    policy = RULES.policies["kestra-standard"]
    assert deadline(policy, RULES.calendar_for(policy), 1, datetime.fromisoformat("2026-11-23T10:00+01:00")) is None


def test_the_clock_starts_at_the_next_business_instant_and_warns_at_three_quarters():
    policy = RULES.policies["kestra-enterprise"]
    friday_evening = datetime.fromisoformat("2027-03-26T18:30+01:00")
    result = deadline(policy, RULES.calendar_for(policy), 1, friday_evening)
    assert result.starts_at.isoformat() == "2027-03-30T08:00:00+00:00"  # Tuesday 09:00 at UTC+1
    assert result.warn_at.astimezone(result.zone).isoformat() == "2027-03-30T15:45:00+01:00"  # 6 h 45 in
    assert result.due_at - result.starts_at == timedelta(hours=9)
    assert "within 1 business day: by 2027-03-30T18:00:00+01:00" in result.explain()


# -- supportbot sla deadline --------------------------------------------------------------

def sla_deadline(tmp_path, *args: str):
    from test_cli import supportbot
    return supportbot("sla", "deadline", *args, cwd=tmp_path)


@pytest.mark.parametrize("args, printed", [
    (("--policy", "kestra-enterprise", "--severity", "1", "--received", "2026-11-23T10:00+01:00"),
     "2026-11-24T10:00:00+01:00"),
    (("--policy", "kestra-enterprise", "--severity", "critique", "--received", "2027-03-26T18:30+01:00"),
     "2027-03-30T18:00:00+01:00"),  # the Friday evening before Easter Monday
    (("--policy", "astran-standard", "--severity", "Urgent", "--received", "2027-03-26T18:30+01:00"),
     "2027-03-29T17:00:00+02:00"),  # Paris changed to summer time on the Sunday
    (("--policy", "astran-standard", "--severity", "low", "--received", "2026-11-23T09:00"),  # UTC
     "2026-12-01T10:00:00+01:00"),
    (("--policy", "kestra-standard", "--severity", "1", "--received", "2026-11-23T10:00+01:00"), "none"),
])
def test_the_command_prints_one_iso_line_in_the_calendars_zone(tmp_path, args, printed):
    result = sla_deadline(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed + "\n"


def test_the_command_applies_a_contracts_overrides(tmp_path, dovecot):
    from helpers import write_config
    from test_cli import supportbot
    config = write_config(tmp_path, dovecot, None, f"sqlite:///{tmp_path / 'bot.db'}")
    samples = Path(__file__).resolve().parents[1] / "samples" / "contracts.yaml"
    supportbot("db", "upgrade", "--config", str(config))
    supportbot("contracts", "import", str(samples), "--config", str(config))
    result = sla_deadline(tmp_path, "--severity", "urgent", "--received", "2026-11-23T17:30+01:00",
                          "--contract", "AST-2025-031", "--config", str(config))
    assert (result.returncode, result.stdout) == (0, "2026-11-24T10:30:00+01:00\n"), result.stderr
    wrong = sla_deadline(tmp_path, "--policy", "kestra-enterprise", "--severity", "1", "--received",
                         "2026-11-23T10:00", "--contract", "AST-2025-031", "--config", str(config))
    assert wrong.returncode == 2 and "is under policy astran-standard" in wrong.stderr


@pytest.mark.parametrize("args, message", [
    (("--policy", "kestra-enterprise", "--severity", "9", "--received", "2026-11-23T10:00"),
     "'9' is not a severity of Kestra Enterprise Support: 1 (Critical), 2 (High), 3 (Medium), 4 (Low)"),
    (("--policy", "nope", "--severity", "1", "--received", "2026-11-23T10:00"), "unknown policy 'nope'"),
    (("--policy", "astran-standard", "--severity", "1", "--received", "tomorrow"), "not an ISO 8601 time"),
    (("--severity", "1", "--received", "2026-11-23T10:00"), "say which policy"),
])
def test_bad_arguments_are_one_clear_line(tmp_path, args, message):
    result = sla_deadline(tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
