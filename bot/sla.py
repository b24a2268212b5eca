"""The contractual first-response deadline of a request: severity + policy + arrival.

The clock starts when the mail arrived in our mailbox (IMAP INTERNALDATE), or at the next
business instant when that was outside business hours, and runs in the business time of
the contract's calendar (an Order's overridden hours included). A policy level with no
target (best effort) has no deadline at all, and so nothing to warn or escalate about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Mapping

from bot.calendar import BusinessTime, business_time
from bot.memo import ByIdentity
from bot.rules import Calendar, Policy, Rules, Target


@dataclass(frozen=True)
class Deadline:
    """When the first human response is due, and when managers are warned before that."""

    level: int
    target: Target
    received_at: datetime
    starts_at: datetime  # the clock's start: the arrival, or the next business instant
    due_at: datetime  # UTC
    warn_at: datetime  # UTC: the policy's warn_at_fraction of the business time has run
    zone: tzinfo  # the calendar's, in which people are told the deadline

    @property
    def local_due(self) -> datetime:
        return self.due_at.astimezone(self.zone)

    def explain(self) -> str:
        started = "" if self.starts_at == self.received_at else \
            f", clock started {self.starts_at.astimezone(self.zone).isoformat()}"
        return f"first response within {self.target}: by {self.local_due.isoformat()}" \
               f" (received {self.received_at.astimezone(self.zone).isoformat()}{started})"


def terms_for(policy: Policy, calendar: Calendar, overrides: Mapping[str, Any] | None
              ) -> tuple[Policy, Calendar]:
    """The policy and calendar that apply to one contract (its Order's overrides applied),
    the same objects for the same overrides, so that what is built from them is reused."""
    if not overrides:
        return policy, calendar
    return _overridden(policy, calendar, extra=(json.dumps(overrides, sort_keys=True, default=str),))


_overridden = ByIdentity(lambda policy, calendar, overrides: policy.with_overrides(calendar, json.loads(overrides)))


def deadline(policy: Policy, calendar: Calendar, level: int, received_at: datetime) -> Deadline | None:
    """The deadline of a request of `level` received at `received_at`; None for best effort."""
    plan = _plan(policy, calendar, extra=(level,))
    if plan.target is None:
        return None
    starts, due, warn = plan.clock.schedule(received_at, plan.allowed, plan.warn_after)
    return Deadline(level, plan.target, received_at, starts, due, warn, plan.clock.zone)


@dataclass(frozen=True)
class _Plan:
    """What a deadline of one level needs from its policy and calendar, worked out once."""

    target: Target | None
    clock: BusinessTime | None = None
    allowed: timedelta = timedelta(0)
    warn_after: timedelta = timedelta(0)

    @classmethod
    def of(cls, policy: Policy, calendar: Calendar, level: int) -> _Plan:
        target = policy.target(level)
        if target is None:
            return cls(None)
        clock = business_time(calendar)
        allowed = clock.duration(target)
        return cls(target, clock, allowed, allowed * policy.escalation.warn_at_fraction)


_plan = ByIdentity(_Plan.of)


def contract_deadline(rules: Rules, policy_name: str, overrides: Mapping[str, Any] | None, level: int,
                      received_at: datetime) -> Deadline | None:
    """The same for a contract known by its policy name and overrides."""
    policy = rules.policies[policy_name]
    return deadline(*terms_for(policy, rules.calendar_for(policy), overrides), level, received_at)
