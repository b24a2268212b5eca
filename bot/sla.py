"""The contractual first-response deadline of a request: severity + policy + arrival.

The clock starts when the mail arrived in our mailbox (IMAP INTERNALDATE), or at the next
business instant when that was outside business hours, and runs in the business time of
the contract's calendar (an Order's overridden hours included). A policy level with no
target (best effort) has no deadline at all, and so nothing to warn or escalate about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Mapping, NamedTuple

from bot.calendar import MICROSECOND, BusinessTime, business_time
from bot.memo import ByIdentity
from bot.rules import Calendar, Policy, Rules, Target


class Deadline(NamedTuple):
    """When the first human response is due, and when managers are warned before that.
    (A named tuple: immutable, and made four times faster than a frozen dataclass.)"""

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
    key = (id(policy), id(calendar), level)
    plan = _PLANS.get(key)  # the hot path: a plain dict, not the generic cache of bot.memo
    if plan is None or plan.policy is not policy or plan.calendar is not calendar:
        if len(_PLANS) > 1024:
            _PLANS.clear()
        plan = _PLANS[key] = _Plan.of(policy, calendar, level)
    if plan.target is None:
        return None
    starts, due, warn = plan.clock.schedule_micros(received_at, plan.allowed, plan.warn_after)
    return Deadline(level, plan.target, received_at, starts, due, warn, plan.clock.zone)


@dataclass(frozen=True)
class _Plan:
    """What a deadline of one level needs from its policy and calendar, worked out once."""

    policy: Policy
    calendar: Calendar
    target: Target | None
    clock: BusinessTime | None = None
    allowed: int = 0  # microseconds of business time
    warn_after: int = 0

    @classmethod
    def of(cls, policy: Policy, calendar: Calendar, level: int) -> _Plan:
        target = policy.target(level)
        if target is None:
            return cls(policy, calendar, None)
        clock = business_time(calendar)
        allowed = clock.duration(target)
        warn_after = allowed * policy.escalation.warn_at_fraction
        return cls(policy, calendar, target, clock, allowed // MICROSECOND, warn_after // MICROSECOND)


_PLANS: dict[tuple[int, int, int], _Plan] = {}  # plans keep their policy and calendar alive


def contract_deadline(rules: Rules, policy_name: str, overrides: Mapping[str, Any] | None, level: int,
                      received_at: datetime) -> Deadline | None:
    """The same for a contract known by its policy name and overrides."""
    policy = rules.policies[policy_name]
    return deadline(*terms_for(policy, rules.calendar_for(policy), overrides), level, received_at)
