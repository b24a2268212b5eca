"""Business-time arithmetic on a calendar of rules/calendars/: when the clock runs.

A calendar's opening hours are turned, year by year, into a sorted table of open
intervals in UTC microseconds, each with the business time that came before it. Every
operation is then two binary searches, exact to the microsecond, whatever the time zone:

- local hours are converted on the day they apply, so a DST change (Europe/Paris in March
  and October) moves the UTC interval, never the local 09:00;
- a holiday or an extra closed date simply has no interval, whatever weekday it falls on;
- a range ending at 24:00 ends at the next local midnight.

An instant is open from the first second of a range up to, not including, its end: a mail
at 18:00:00 sharp, when the day closes at 18:00, starts its clock at the next opening.

    position(t)   business time from the table's origin to t (flat while closed)
    add(t, d)     the earliest instant s >= t with position(s) == position(t) + d
    elapsed(a, b) position(b) - position(a)

so that add(add(t, a), b) == add(t, a + b) and elapsed(t, add(t, d)) == d exactly.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

from bot.memo import ByIdentity
from bot.rules import Calendar, Target

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)
FIRST_YEAR, LAST_YEAR = 1900, 9990  # the years a table may cover (a broken server may say 1970)
GROW_YEARS = 5  # years added to a table at a time


@dataclass(frozen=True)
class _Table:
    """Open intervals [starts[i], ends[i]) in UTC microseconds, in order, not overlapping,
    for the years first_year..last_year; before[i] and after[i] are the business time of
    the intervals before i, without and with interval i. Instants in [low, high) are
    answered without growing it: a year of margin on each side."""

    first_year: int
    last_year: int
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    before: tuple[int, ...] = ()
    after: tuple[int, ...] = ()
    low: int = 0
    high: int = 0


class BusinessTime:
    """Business-time operations on one calendar. Thread-safe: a table is replaced by a
    larger one, never changed, and grows to cover whatever years are asked for."""

    def __init__(self, calendar: Calendar) -> None:
        self.calendar = calendar
        self.zone = calendar.tz
        self.day_length = calendar.day_length  # what "1 business day" is on this calendar
        self._lock = threading.Lock()
        self._table = _Table(0, 0)

    def duration(self, target: Target) -> timedelta:
        """A target as business time on this calendar: hours, or days × the day's length."""
        return target.over(self.day_length)

    def next_open(self, moment: datetime) -> datetime:
        """The next business instant at or after `moment` (itself when open)."""
        return self.schedule(moment)[0]

    def add(self, moment: datetime, duration: timedelta) -> datetime:
        """`moment` plus `duration` of business time: the instant at which that much has run."""
        return self.schedule(moment, duration)[1]

    def schedule(self, moment: datetime, *durations: timedelta) -> tuple[datetime, ...]:
        """The next business instant at or after `moment`, then for each duration the
        instant at which that much business time has run since `moment`: one lookup for a
        deadline's start, due time and warning time."""
        return self.schedule_micros(moment, *(d // MICROSECOND for d in durations))

    def schedule_micros(self, moment: datetime, *durations: int) -> tuple[datetime, ...]:
        """schedule() with the durations in microseconds (what a deadline precomputes)."""
        x = (moment - EPOCH) // MICROSECOND if moment.tzinfo is not None else _micros(moment)
        table = self._table_for(x)
        i = bisect_right(table.ends, x)
        start = table.starts[i]
        position = table.before[i] + (x - start if start < x else 0)
        times = [moment if start <= x else EPOCH + start * MICROSECOND]
        for duration in durations:
            if duration <= 0:
                if duration < 0:
                    raise ValueError("cannot add a negative business duration")
                times.append(moment)
                continue
            goal = position + duration
            while goal > table.after[-1]:
                table = self._grow(table.first_year, table.last_year + GROW_YEARS)
            j = bisect_left(table.after, goal)
            times.append(EPOCH + (table.starts[j] + goal - table.before[j]) * MICROSECOND)
        return tuple(times)

    def is_open(self, moment: datetime) -> bool:
        x = _micros(moment)
        table = self._table_for(x)
        return table.starts[bisect_right(table.ends, x)] <= x

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Business time between two instants (negative when `end` is before `start`)."""
        a, b = _micros(start), _micros(end)
        self._table_for(min(a, b))
        table = self._table_for(max(a, b))
        return (_position(table, b) - _position(table, a)) * MICROSECOND

    def _table_for(self, x: int) -> _Table:
        """A table on which x has an interval ending after it (and all it had before)."""
        table = self._table
        if table.low <= x < table.high:
            return table
        year = _instant(x).year
        first = min(year, table.first_year) if table.starts else year
        table = self._grow(first - 1, max(year, table.last_year) + GROW_YEARS)
        while table.ends[-1] <= x:
            table = self._grow(table.first_year, table.last_year + GROW_YEARS)
        return table

    def _grow(self, first_year: int, last_year: int) -> _Table:
        if first_year < FIRST_YEAR - 1 or last_year > LAST_YEAR:
            raise ValueError(f"business time is only known from {FIRST_YEAR} to {LAST_YEAR}")
        with self._lock:
            table = self._table
            if not table.starts or first_year < table.first_year or last_year > table.last_year:
                first = min(first_year, table.first_year) if table.starts else first_year
                table = _build(self.calendar, self.zone, first, max(last_year, table.last_year))
                if not table.starts:
                    raise ValueError("the calendar has no business time in these years")
                self._table = table
            return table


def _position(table: _Table, x: int) -> int:
    """Business time from the table's origin to x; x must lie before its last end."""
    i = bisect_right(table.ends, x)
    return table.before[i] + max(0, x - table.starts[i])


def _build(calendar: Calendar, zone, first_year: int, last_year: int) -> _Table:
    starts, ends, before, after = [], [], [], []
    total = 0
    day, last = date(max(first_year, FIRST_YEAR), 1, 1), date(last_year, 12, 31)
    while day <= last:
        midnight = datetime(day.year, day.month, day.day)
        for opening in calendar.openings(day):
            start = _micros((midnight + opening.start).replace(tzinfo=zone))
            end = _micros((midnight + opening.end).replace(tzinfo=zone))
            if starts and start < ends[-1]:  # a range that a DST change folded onto the last
                start = ends[-1]
            if end <= start:
                continue  # inside a DST gap: no time at all
            starts.append(start)
            ends.append(end)
            before.append(total)
            total += end - start
            after.append(total)
        day += timedelta(days=1)
    low = _micros(datetime(first_year + 1, 1, 1, tzinfo=timezone.utc))
    high = _micros(datetime(last_year, 1, 1, tzinfo=timezone.utc))
    return _Table(first_year, last_year, tuple(starts), tuple(ends), tuple(before), tuple(after), low, high)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("business time needs an aware datetime (with a time zone)")
    return (moment - EPOCH) // MICROSECOND


def _instant(micros: int) -> datetime:
    return EPOCH + micros * MICROSECOND


_clocks = ByIdentity(lambda calendar: _clock_for(calendar))


def business_time(calendar: Calendar) -> BusinessTime:
    """One BusinessTime per calendar (an order's overridden hours are a calendar too):
    found by identity first, since hashing a calendar costs more than the arithmetic."""
    return _clocks(calendar)


@lru_cache(maxsize=64)
def _clock_for(calendar: Calendar) -> BusinessTime:
    return BusinessTime(calendar)


def offset_label(moment: datetime) -> str:
    """UTC+1, UTC+2, UTC+5:30, UTC: how a time zone is named to customers and agents."""
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    if not minutes:
        return "UTC"
    sign, minutes = ("+" if minutes > 0 else "-"), abs(minutes)
    return f"UTC{sign}{minutes // 60}" + (f":{minutes % 60:02d}" if minutes % 60 else "")
