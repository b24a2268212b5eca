"""The contractual first-response deadline of a request: severity + policy + arrival.

The clock starts when the mail arrived in our mailbox (IMAP INTERNALDATE), or at the next
business instant when that was outside business hours, and runs in the business time of
the contract's calendar (an Order's overridden hours included). A policy level with no
target (best effort) has no deadline at all, and so nothing to warn or escalate about.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Mapping

from bot.calendar import business_time
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
    """The policy and calendar that apply to one contract (its Order's overrides applied)."""
    return policy.with_overrides(calendar, overrides) if overrides else (policy, calendar)


def deadline(policy: Policy, calendar: Calendar, level: int, received_at: datetime) -> Deadline | None:
    """The deadline of a request of `level` received at `received_at`; None for best effort."""
    target = policy.target(level)
    if target is None:
        return None
    clock = business_time(calendar)
    allowed = target.business_time(calendar)
    return Deadline(level, target, received_at, clock.next_open(received_at),
                    clock.add(received_at, allowed),
                    clock.add(received_at, allowed * policy.escalation.warn_at_fraction), clock.zone)


def contract_deadline(rules: Rules, policy_name: str, overrides: Mapping[str, Any] | None, level: int,
                      received_at: datetime) -> Deadline | None:
    """The same for a contract known by its policy name and overrides."""
    policy = rules.policies[policy_name]
    return deadline(*terms_for(policy, rules.calendar_for(policy), overrides), level, received_at)
