#!/usr/bin/env python3
"""Deadlines per second: the SLA clock of both reference policies, on one core.

    python tests/benchmarks/deadlines.py [--count 200000] [--seed 7]

Arrivals are spread over 2026-2027 at random seconds (week-ends, nights, holidays and both
DST changes included), at every severity of kestra-enterprise (1 to 5 business days of 9
hours, French holidays) and astran-standard (8 to 48 business hours, Paris time). Three
runs are timed, each computing bot.sla.deadline() for every arrival (the clock start, the
deadline and the warning time), after one warm-up run that builds the calendars' tables:

- all:        every severity of both policies;
- 5 days:     only Kestra's 5-business-day target, from arrivals in the holiday clusters
              (Christmas to New Year, Easter, May), the longest walks through the table;
- add only:   BusinessTime.add() alone, the arithmetic without the Deadline around it.

Prints deadlines per second of CPU time for each (and of wall time), and whether the
target (100,000 per second on one core) is met.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bot.calendar import business_time  # noqa: E402
from bot.rules import load_rules  # noqa: E402
from bot.sla import deadline  # noqa: E402

TARGET = 100_000
CLUSTERS = [(datetime(2026, 12, 18), 20), (datetime(2027, 3, 24), 10), (datetime(2026, 4, 28), 20),
            (datetime(2027, 4, 28), 20)]  # (first day, days): Christmas-New Year, Easter, May


def arrivals(count: int, rng: random.Random, clusters: bool = False) -> list[datetime]:
    result = []
    for _ in range(count):
        if clusters:
            first, days = rng.choice(CLUSTERS)
            moment = first + timedelta(seconds=rng.randrange(days * 86400))
        else:
            moment = datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(2 * 365 * 86400))
        result.append(moment.replace(tzinfo=timezone.utc))
    return result


def timed(label: str, work, count: int) -> float:
    """Deadlines per second of this process's CPU time: the figure for one core, which
    other work on a shared machine does not change (wall time is printed beside it)."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rate = count / cpu
    print(f"{label:<10} {rate:>12,.0f} deadlines/s of CPU ({count / wall:,.0f}/s of wall time)   "
          f"{'met' if rate >= TARGET else 'NOT met'} (target {TARGET:,}/s)")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rules = load_rules()
    jobs = []
    for name in ("kestra-enterprise", "astran-standard"):
        policy = rules.policies[name]
        calendar = rules.calendar_for(policy)
        jobs += [(policy, calendar, level) for level in policy.levels]
    moments = arrivals(args.count, rng)
    work = [(jobs[i % len(jobs)], moment) for i, moment in enumerate(moments)]
    kestra = rules.policies["kestra-enterprise"]
    long_walks = arrivals(args.count, rng, clusters=True)
    kestra_calendar = rules.calendar_for(kestra)
    clock = business_time(kestra_calendar)
    five_days = kestra.target(4).business_time(kestra_calendar)

    def every_severity():
        for (policy, calendar, level), moment in work:
            deadline(policy, calendar, level, moment)

    every_severity()  # warm-up: the calendars build their tables for these years
    print(f"{args.count:,} arrivals in 2026-2027, Python {sys.version.split()[0]}, one core")
    timed("all", every_severity, args.count)
    timed("5 days", lambda: [deadline(kestra, kestra_calendar, 4, m) for m in long_walks], args.count)
    timed("add only", lambda: [clock.add(m, five_days) for m in long_walks], args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
