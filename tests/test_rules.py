"""The shipped rules encode both reference contracts; broken rules name file, key and line."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from bot.resources import shipped_dir
from bot.rules import RulesError, Target, load_rules

SHIPPED = shipped_dir("rules")


@pytest.fixture(scope="module")
def rules():
    return load_rules(SHIPPED)


# --- the shipped files --------------------------------------------------------------------

def test_every_shipped_file_loads(rules):
    assert set(rules.calendars) == {"kestra", "astran"}
    assert set(rules.policies) == {"kestra-enterprise", "kestra-standard", "astran-standard"}
    assert rules.severity.levels == (1, 2, 3, 4)
    assert load_rules().policies.keys() == rules.policies.keys()  # default: shipped folder


def test_kestra_calendar_is_fixed_utc_plus_one_weekdays_9_to_18_without_french_holidays(rules):
    cal = rules.calendars["kestra"]
    assert cal.timezone == "UTC+01:00"
    for month in (1, 7):  # "CET (UTC+1)" read literally: no summer time
        assert datetime(2025, month, 15, 12, tzinfo=cal.tz).utcoffset() == timedelta(hours=1)
    for weekday in range(5):
        assert [str(r) for r in cal.hours.on(weekday)] == ["09:00-18:00"]
    assert cal.hours.on(5) == () and cal.hours.on(6) == ()
    assert cal.day_length == timedelta(hours=9)
    assert (cal.holidays.country, cal.holidays.subdivision) == ("FR", None)
    for holiday in (date(2025, 5, 1), date(2025, 5, 8), date(2025, 7, 14), date(2025, 11, 11),
                    date(2025, 12, 25), date(2025, 4, 21)):
        assert cal.is_closed_date(holiday) and cal.openings(holiday) == ()
    assert cal.openings(date(2025, 7, 15)) == cal.hours.on(1)


def test_astran_calendar_is_paris_time_weekdays_9_to_17_without_holidays(rules):
    cal = rules.calendars["astran"]
    assert cal.timezone == "Europe/Paris"
    assert datetime(2025, 1, 15, 12, tzinfo=cal.tz).utcoffset() == timedelta(hours=1)
    assert datetime(2025, 7, 15, 12, tzinfo=cal.tz).utcoffset() == timedelta(hours=2)
    for weekday in range(5):
        assert [str(r) for r in cal.hours.on(weekday)] == ["09:00-17:00"]
    assert cal.hours.on(5) == () and cal.hours.on(6) == ()
    assert cal.day_length == timedelta(hours=8)
    assert cal.holidays is None
    assert not cal.is_closed_date(date(2025, 12, 25))  # a Thursday: a Business Day
    assert cal.openings(date(2025, 7, 14)) == cal.hours.on(0)


def test_kestra_enterprise_reading(rules):
    policy = rules.policies["kestra-enterprise"]
    cal = rules.calendar_for(policy)
    assert policy.calendar == "kestra" and cal is rules.calendars["kestra"]
    assert policy.languages == ("en", "fr")
    assert policy.contacts == "listed"
    assert [(s.level, s.key, s.labels["en"], s.labels["fr"], s.response)
            for s in policy.severities] == [
        (1, "critical", "Critical", "Critique", Target(1, "business_days")),
        (2, "high", "High", "Élevée", Target(2, "business_days")),
        (3, "medium", "Medium", "Moyenne", Target(3, "business_days")),
        (4, "low", "Low", "Faible", Target(5, "business_days")),
    ]
    # N business days = N × 9 business hours.
    assert [policy.target(level).business_time(cal) for level in (1, 2, 3, 4)] == [
        timedelta(hours=9), timedelta(hours=18), timedelta(hours=27), timedelta(hours=45)]
    assert str(policy.target(1)) == "1 business day" and str(policy.target(4)) == "5 business days"
    assert policy.severity(1).label("fr") == "Critique"
    assert "not responding" in policy.severity(1).description
    assert policy.default_severity in policy.levels
    ent = policy.entitlement
    assert ent.subscription_required and not ent.free_use_excluded
    assert (ent.unpaid_fees.anchor, ent.unpaid_fees.days) == ("period_start", 90)
    assert (ent.renewal.tacit, ent.renewal.term_months, ent.renewal.notice_months) == (True, 12, 2)
    keys = {e.key for e in policy.exclusions}
    assert {"on_site", "third_party_software", "custom_plugins", "superseded_releases"} <= keys
    assert all(set(e.description) == {"en", "fr"} for e in policy.exclusions)
    assert policy.escalation.warn_at_fraction == 0.75
    assert policy.customer_escalation_markers == ()
    assert policy.overridable == ()
    assert "90-days" in policy.clauses["unpaid_fees"]
    assert "English or French" in policy.clauses["languages"]
    assert not policy.best_effort


def test_kestra_standard_is_best_effort(rules):
    policy = rules.policies["kestra-standard"]
    assert policy.calendar == "kestra"
    assert policy.best_effort
    assert policy.levels == (1, 2, 3, 4)
    assert all(s.response is None for s in policy.severities)
    assert policy.entitlement.unpaid_fees is None


def test_astran_standard_reading(rules):
    policy = rules.policies["astran-standard"]
    cal = rules.calendar_for(policy)
    assert policy.calendar == "astran"
    assert policy.languages == ("en", "fr")
    assert policy.contacts == "customer_domain"
    assert [(s.level, s.key, s.labels["en"], s.labels["fr"], s.response)
            for s in policy.severities] == [
        (1, "urgent", "Urgent", "Urgent", Target(8, "business_hours")),
        (2, "high", "High", "Haute", Target(12, "business_hours")),
        (3, "normal", "Normal", "Normale", Target(24, "business_hours")),
        (4, "low", "Low", "Basse", Target(48, "business_hours")),
    ]
    assert policy.target(4).business_time(cal) == timedelta(hours=48)
    ent = policy.entitlement
    assert ent.subscription_required and ent.free_use_excluded
    fees = ent.unpaid_fees
    assert (fees.anchor, fees.days, fees.suspension_after_days, fees.ignore_disputed) == (
        "due_date", 0, 14, True)
    assert (ent.renewal.tacit, ent.renewal.term_months, ent.renewal.notice_days) == (True, None, 30)
    assert policy.customer_escalation_markers == ("Support Astran",)
    assert policy.overridable == ("hours", "targets")
    assert "(7) Free Use" in policy.clauses["free_use"]
    assert "French or English" in policy.clauses["languages"]


def test_specific_support_overrides_hours_and_targets(rules):
    policy = rules.policies["astran-standard"]
    cal = rules.calendar_for(policy)
    hours = {d: "08:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat")}
    new_policy, new_cal = policy.with_overrides(
        cal, {"hours": hours, "targets": {"urgent": "4 business hours", "4": "2 business days"}})
    assert new_policy.target(1) == Target(4, "business_hours")
    assert new_policy.target(2) == Target(12, "business_hours")
    assert new_policy.target(4).business_time(new_cal) == timedelta(hours=24)
    assert new_cal.timezone == "Europe/Paris" and str(new_cal.hours.on(5)[0]) == "08:00-20:00"
    assert policy.target(1) == Target(8, "business_hours")  # the shipped policy is unchanged
    with pytest.raises(ValueError, match="targets: unknown severity 'critical'"):
        policy.with_overrides(cal, {"targets": {"critical": "1 business hour"}})
    with pytest.raises(ValueError, match="expected 'N business hours'"):
        policy.with_overrides(cal, {"targets": {"urgent": "soon"}})
    with pytest.raises(ValueError, match="hours: mon"):
        policy.with_overrides(cal, {"hours": {"mon": "9-5"}})
    kestra = rules.policies["kestra-enterprise"]
    with pytest.raises(ValueError, match="does not allow overriding 'hours'"):
        kestra.with_overrides(rules.calendar_for(kestra), {"hours": hours})


def _declared(rules, text):
    return {d.level for d in rules.severity.declared if any(p.search(text) for p in d.patterns)}


@pytest.mark.parametrize("text, level", [
    ("Severity 1: prod down", 1), ("[Sev1] flows stuck", 1), ("P1 - scheduler", 1),
    ("[URGENT] instance", 1), ("Urgent: plus rien ne marche", 1), ("Problème bloquant", 1),
    ("incident critique", 1), ("Sévérité 2", 2), ("High priority: slow UI", 2),
    ("priorité haute", 2), ("Sev 3", 3), ("priorité normale", 3), ("P4 question", 4),
    ("low priority", 4), ("not urgent, just a question", 4), ("pas urgent", 4),
])
def test_declared_priorities(rules, text, level):
    assert _declared(rules, text) == {level}


@pytest.mark.parametrize("text, language, level", [
    ("Our instance is not responding since this morning", "en", 1),
    ("The database has been corrupted", "en", 1),
    ("Notre instance ne répond plus", "fr", 1),
    ("Nous constatons une perte de données", "fr", 1),
    ("We see degraded performance on the workers", "en", 2),
    ("L'interface est très lente depuis la mise à jour", "fr", 2),
    ("A minor error shows for a few users", "en", 3),
    ("How do I configure the SSO?", "en", 4),
    ("Comment configurer le SSO ?", "fr", 4),
])
def test_evidence_examples(rules, text, language, level):
    found = set()
    for ev in rules.severity.evidence:
        lowered = text.lower()
        if any(p.lower() in lowered for p in ev.phrases.get(language, ())) or any(
                p.search(text) for p in ev.patterns.get(language, ())):
            found.add(ev.level)
    assert level in found and min(found) == level


# --- broken files -------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path) -> Path:
    shutil.copytree(SHIPPED, tmp_path / "rules")
    return tmp_path / "rules"


def edit(folder: Path, name: str, old: str, new: str) -> int:
    """Replace `old` by `new` in the first line containing it; return its line number."""
    path = folder / name
    lines = path.read_text(encoding="utf-8").split("\n")
    number = next(i for i, line in enumerate(lines) if old in line)
    lines[number] = lines[number].replace(old, new)
    path.write_text("\n".join(lines), encoding="utf-8")
    return number + 1


def error(folder: Path) -> RulesError:
    with pytest.raises(RulesError) as info:
        load_rules(folder)
    return info.value


def test_yaml_syntax_error(folder):
    line = edit(folder, "policies/kestra-enterprise.yaml", "contacts: listed",
                "contacts: listed: twice")
    e = error(folder)
    assert e.file == str(folder / "policies/kestra-enterprise.yaml")
    assert e.line == line and "YAML syntax error" in e.message
    assert str(e).startswith(f"{e.file}:{line}: ")


def test_an_impossible_date_names_its_line(folder):
    line = edit(folder, "calendars/kestra.yaml", "extra_closed: []", "extra_closed: [2026-02-30]")
    e = error(folder)
    assert (e.file, e.line, e.key) == (str(folder / "calendars/kestra.yaml"), line, "extra_closed[0]")
    assert "'2026-02-30' is not a valid date" in e.message


def test_unknown_key(folder):
    line = edit(folder, "policies/astran-standard.yaml", "contacts: customer_domain",
                "contact: customer_domain")
    e = error(folder)
    assert (e.file, e.line, e.key, e.message) == (
        str(folder / "policies/astran-standard.yaml"), line, "contact", "unknown key")


def test_bad_regex(folder):
    line = edit(folder, "severity.yaml", r"'\b(?:p2|p 2)\b'", r"'\b(?:p2|p 2\b'")
    e = error(folder)
    assert e.file == str(folder / "severity.yaml") and e.line == line
    assert e.key == "declared[1].patterns[1]"
    assert "invalid regular expression" in e.message and "missing )" in e.message


def test_bad_target(folder):
    line = edit(folder, "policies/kestra-enterprise.yaml", "response: 2 business days",
                "response: 2 days")
    e = error(folder)
    assert (e.line, e.key) == (line, "severities[1].response")
    assert str(e) == (f"{folder / 'policies/kestra-enterprise.yaml'}:{line}: "
                      "severities[1].response: expected 'N business hours' or "
                      "'N business days' (N ≥ 1), or null for best effort")


def test_unknown_calendar(folder):
    line = edit(folder, "policies/kestra-standard.yaml", "calendar: kestra", "calendar: kestre")
    e = error(folder)
    assert (e.file, e.line, e.key) == (str(folder / "policies/kestra-standard.yaml"), line,
                                       "calendar")
    assert "unknown calendar 'kestre' (known: astran, kestra)" in e.message


def test_bad_timezone(folder):
    line = edit(folder, "calendars/astran.yaml", 'timezone: "Europe/Paris"',
                "timezone: Europe/Pariss")
    e = error(folder)
    assert (e.file, e.line, e.key) == (str(folder / "calendars/astran.yaml"), line, "timezone")
    assert "unknown time zone 'Europe/Pariss'" in e.message


def test_bad_fixed_offset(folder):
    line = edit(folder, "calendars/kestra.yaml", 'timezone: "UTC+01:00"', 'timezone: "UTC+1h"')
    assert (error(folder).line, error(folder).key) == (line, "timezone")


def test_bad_opening_range(folder):
    line = edit(folder, "calendars/kestra.yaml", 'wed: ["09:00-18:00"]', 'wed: ["18:00-09:00"]')
    e = error(folder)
    assert (e.line, e.key) == (line, "hours.wed[0]")
    line = edit(folder, "calendars/kestra.yaml", '"18:00-09:00"', '"09:00-12:00", "11:00-18:00"')
    assert (error(folder).line, "overlap" in error(folder).message) == (line, True)


def test_unknown_holiday_country(folder):
    line = edit(folder, "calendars/kestra.yaml", "country: FR", "country: XX")
    e = error(folder)
    assert (e.line, e.key) == (line, "holidays.country")


def test_duplicate_key(folder):
    line = edit(folder, "policies/kestra-enterprise.yaml", "contacts: listed",
                "contacts: listed\ncontacts: customer_domain")
    e = error(folder)
    assert (e.line, e.message) == (line + 1, "duplicate key 'contacts'")


def test_missing_key_points_at_its_parent(folder):
    item = edit(folder, "policies/astran-standard.yaml", "- level: 3", "- level: 3")
    edit(folder, "policies/astran-standard.yaml", "response: 24 business hours", "# removed")
    e = error(folder)
    assert (e.line, e.key, e.message) == (item, "severities[2].response", "required key is missing")


def test_unknown_key_is_reported_before_the_missing_one(folder):
    line = edit(folder, "policies/astran-standard.yaml", "key: normal", "name: normal")
    e = error(folder)
    assert (e.line, e.key, e.message) == (line, "severities[2].name", "unknown key")


def test_label_missing_for_a_served_language(folder):
    line = edit(folder, "policies/kestra-enterprise.yaml", "labels: {en: Medium, fr: Moyenne}",
                "labels: {en: Medium}")
    e = error(folder)
    assert (e.line, e.key) == (line, "severities[2].labels")
    assert "missing text for fr" in e.message


def test_default_severity_must_exist(folder):
    line = edit(folder, "policies/kestra-enterprise.yaml", "default_severity: 3",
                "default_severity: 7")
    e = error(folder)
    assert (e.line, e.key) == (line, "default_severity")


def test_evidence_level_must_exist_in_every_policy(folder):
    line = edit(folder, "severity.yaml", "  - level: 4", "  - level: 5")
    e = error(folder)
    assert (e.file, e.line, e.key) == (str(folder / "severity.yaml"), line, "evidence[3].level")
    assert "has no severity of level 5" in e.message


def test_business_days_need_equal_days(folder):
    edit(folder, "calendars/kestra.yaml", 'fri: ["09:00-18:00"]', 'fri: ["09:00-12:00"]')
    e = error(folder)
    assert e.file == str(folder / "policies/kestra-enterprise.yaml")
    assert e.key == "severities[0].response" and "equally long" in e.message


def test_empty_and_non_mapping_files(folder):
    (folder / "calendars/empty.yaml").write_text("", encoding="utf-8")
    assert error(folder).message == "expected a mapping of keys to values"
    (folder / "calendars/empty.yaml").write_text("- a\n- b\n", encoding="utf-8")
    assert error(folder).line == 1


def test_missing_folder_and_files(tmp_path, folder):
    assert error(tmp_path / "nowhere").message == "rules folder not found"
    (folder / "severity.yaml").unlink()
    assert error(folder).file == str(folder / "severity.yaml")
