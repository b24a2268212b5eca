"""Business-time arithmetic: properties that must hold on every calendar, and the edges
(DST, midnight, holidays, year ends, exact opening and closing seconds) spelt out."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.calendar import BusinessTime, business_time, offset_label
from bot.rules import Calendar, load_rules

RULES = load_rules()
# Several ranges a day, a week-end opening, a night that spans Paris' DST gap and its
# repeated hour, Alsace-Moselle holidays (Good Friday, 26 December), a closed date.
SPLIT = Calendar.model_validate({
    "timezone": "Europe/Paris",
    "hours": {"mon": ["08:00-12:00", "13:30-17:30"], "tue": ["08:00-12:00", "13:30-17:30"],
              "wed": "09:00-12:00", "thu": ["00:00-24:00"], "fri": ["08:00-12:00", "13:30-17:30"],
              "sat": "10:00-14:00", "sun": ["01:00-04:00", "22:00-24:00"]},
    "holidays": {"country": "FR", "subdivision": "57"},
    "extra_closed": ["2026-12-24"], "removed_holidays": ["2026-05-08"]})
# A half-hour offset with a half-hour DST shift.
LORD_HOWE = Calendar.model_validate({"timezone": "Australia/Lord_Howe",
                                     "hours": {"sun": "00:00-24:00", "mon": "01:30-03:00"}})
CALENDARS = {"kestra": RULES.calendars["kestra"], "astran": RULES.calendars["astran"],
             "split": SPLIT, "lord_howe": LORD_HOWE}

UTC = timezone.utc
moments = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31),
                       timezones=st.just(UTC))
durations = st.one_of(
    st.integers(0, 200 * 3600).map(lambda s: timedelta(seconds=s)),
    st.integers(0, 10**12).map(lambda us: timedelta(microseconds=us)),
    st.sampled_from([timedelta(hours=h) for h in (8, 9, 12, 24, 27, 45, 48)]))
calendars = st.sampled_from(sorted(CALENDARS))
PROPERTY = settings(max_examples=400, deadline=None)


def clock(name: str) -> BusinessTime:
    return business_time(CALENDARS[name])


@PROPERTY
@given(calendars, moments, durations)
def test_a_result_lies_inside_opening_hours(name, t, d):
    end = clock(name).add(t, d)
    assert end >= t
    if d:
        assert clock(name).is_open(end - timedelta(microseconds=1))
    assert clock(name).is_open(clock(name).next_open(t))


@PROPERTY
@given(calendars, moments, durations, durations)
def test_adding_a_then_b_is_adding_a_plus_b(name, t, a, b):
    bt = clock(name)
    assert bt.add(bt.add(t, a), b) == bt.add(t, a + b)


@PROPERTY
@given(calendars, moments, durations)
def test_elapsed_undoes_add(name, t, d):
    bt = clock(name)
    assert bt.elapsed(t, bt.add(t, d)) == d


@PROPERTY
@given(calendars, moments, moments, durations, durations)
def test_monotonic_in_time_and_duration(name, t1, t2, d1, d2):
    bt = clock(name)
    (t1, t2), (d1, d2) = sorted((t1, t2)), sorted((d1, d2))
    assert bt.add(t1, d1) <= bt.add(t2, d1)
    assert bt.add(t1, d1) <= bt.add(t1, d2)
    assert bt.elapsed(t1, t2) >= timedelta(0) and bt.elapsed(t2, t1) == -bt.elapsed(t1, t2)


@PROPERTY
@given(calendars, moments)
def test_the_next_opening_loses_no_business_time(name, t):
    bt = clock(name)
    start = bt.next_open(t)
    assert bt.elapsed(t, start) == timedelta(0)
    assert start == t if bt.is_open(t) else start > t


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_opening_and_closing_seconds():
    kestra = clock("kestra")
    assert kestra.is_open(at("2026-11-23T09:00:00+01:00"))
    assert not kestra.is_open(at("2026-11-23T08:59:59.999999+01:00"))
    assert not kestra.is_open(at("2026-11-23T18:00:00+01:00"))  # the closing second is closed
    assert kestra.next_open(at("2026-11-23T18:00:00+01:00")) == at("2026-11-24T09:00+01:00")
    assert kestra.add(at("2026-11-23T09:00+01:00"), timedelta(hours=9)) == at("2026-11-23T18:00+01:00")


def test_a_day_is_as_long_as_its_clocks_say_on_dst_changes():
    # SPLIT opens on Sundays 01:00-04:00: on 29 March 2026 Paris
    # skips 02:00-03:00 (2 hours open), on 25 October it repeats it (4 hours open).
    split = clock("split")
    assert split.elapsed(at("2026-03-29T00:00+01:00"), at("2026-03-29T05:00+02:00")) == timedelta(hours=2)
    assert split.elapsed(at("2026-10-25T00:00+02:00"), at("2026-10-25T05:00+01:00")) == timedelta(hours=4)
    astran = clock("astran")  # 09:00 stays 09:00 in Paris on both sides of the change
    assert astran.next_open(at("2026-03-28T12:00+01:00")) == at("2026-03-30T09:00+02:00")
    assert astran.next_open(at("2026-10-24T12:00+02:00")) == at("2026-10-26T09:00+01:00")
    assert astran.elapsed(at("2026-03-27T09:00+01:00"), at("2026-03-30T17:00+02:00")) == timedelta(hours=16)


def test_a_half_hour_dst_shift():
    # Lord Howe Island: UTC+10:30, and UTC+11 from the first Sunday of October.
    howe = clock("lord_howe")
    assert howe.elapsed(at("2026-10-04T00:00+10:30"), at("2026-10-05T00:00+11:00")) == timedelta(hours=23, minutes=30)
    assert offset_label(at("2026-10-05T00:00+11:00")) == "UTC+11"
    assert offset_label(datetime(2026, 7, 1, tzinfo=howe.zone)) == "UTC+10:30"


def test_holidays_extra_closures_and_reopened_holidays():
    split = clock("split")
    good_friday = date(2026, 4, 3)  # a holiday in Moselle only
    assert SPLIT.is_closed_date(good_friday) and SPLIT.is_closed_date(date(2026, 12, 26))
    assert not split.is_open(at("2026-04-03T10:00+02:00"))
    assert not split.is_open(at("2026-12-24T10:00+01:00"))  # extra_closed
    assert split.is_open(at("2026-05-08T10:00+02:00"))  # removed_holidays: 8 May is worked
    kestra = clock("kestra")  # a holiday on a week-end closes nothing more
    assert kestra.elapsed(at("2026-08-14T09:00+01:00"), at("2026-08-17T18:00+01:00")) == timedelta(hours=18)


def test_over_a_year_end_and_across_many_years():
    kestra = clock("kestra")
    assert kestra.add(at("2026-12-31T17:00+01:00"), timedelta(hours=2)) == at("2027-01-04T10:00+01:00")
    far = kestra.add(at("2026-01-01T00:00+01:00"), timedelta(hours=9 * 252))  # 252 working days in 2026
    assert far == at("2026-12-31T18:00+01:00")
    assert kestra.elapsed(at("2040-01-01T00:00Z"), at("2024-01-01T00:00Z")) < timedelta(0)


def test_times_long_past_are_known_too():
    kestra = clock("kestra")  # a broken server's INTERNALDATE: 1 January 1970 was a Thursday
    assert kestra.add(at("1970-01-01T00:00Z"), timedelta(hours=9)) == at("1970-01-02T18:00+01:00")


def test_offset_labels():
    assert offset_label(at("2026-11-23T10:00+01:00")) == "UTC+1"
    assert offset_label(at("2026-11-23T10:00+00:00")) == "UTC"
    assert offset_label(at("2026-11-23T10:00-05:30")) == "UTC-5:30"


@pytest.mark.parametrize("name, offset", [("UTC+1", 1), ("UTC+01", 1), ("UTC+01:00", 1), ("UTC-05", -5)])
def test_fixed_offsets_may_be_written_several_ways(name, offset):
    zone = Calendar.model_validate({"timezone": name, "hours": {"mon": "09:00-17:00"}}).tz
    assert datetime(2026, 7, 1, tzinfo=zone).utcoffset() == timedelta(hours=offset)


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="aware"):
        clock("kestra").add(datetime(2026, 11, 23, 10), timedelta(hours=1))
