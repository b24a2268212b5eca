"""Is a customer entitled to support on a given day? The policy's clauses, evaluated.

Pure: a contract, its policy (rules/policies/*.yaml), its invoices and a day in the
contract's time zone in; a Verdict with every reason in plain words out, dates and invoice
numbers included, because the refusal mail quotes them to the customer. Which contract
applies and who wrote are decided by the caller.

Readings kept here (DESIGN.md "Rules"):
- A period runs from its start to the day before the next one: a 12-month contract in
  effect on 1 March 2025 covers 1 March 2025 to 28 February 2026; with tacit renewal the
  next period starts on 1 March 2026, without it the contract has ended. A contract with no
  term (Astran's Subscription Period is "specified in the Order") runs until terminated.
- A termination date is the last day of service.
- `unpaid_fees: {anchor, days}`: an invoice unpaid at the end of day `anchor + days` ends
  the entitlement from the next day: Kestra's "not paid within 90 days following the
  Effective Date" of the period it bills (day 90 still entitled, day 91 not); Astran's "not
  paid when due" (the due date still entitled, the day after not). A payment made on a day
  counts from that day. A disputed invoice does not count when the policy says so.
"""

from __future__ import annotations

import calendar as months
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from bot.identify import Sender
from bot.rules import Policy, Rules


@dataclass(frozen=True)
class ContractTerms:
    number: str
    policy: str
    effective: date
    term_months: int | None = None  # None: the policy's renewal term
    tacit_renewal: bool | None = None  # None: as the policy says
    terminated: date | None = None
    free_use: bool = False
    overrides: dict[str, Any] | None = None


@dataclass(frozen=True)
class InvoiceState:
    number: str
    issued: date
    due: date
    period_start: date | None = None  # of the period it bills; else its issue date
    paid: date | None = None
    disputed: bool = False


@dataclass(frozen=True)
class Verdict:
    entitled: bool
    reasons: tuple[str, ...]  # why not (empty when entitled), or what was checked
    period: tuple[date, date] | None = None  # the current period, first and last day


def add_months(day: date, count: int) -> date:
    """The same day `count` months later, or the month's last day (31 Jan + 1 = 28/29 Feb)."""
    month = day.month - 1 + count
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, months.monthrange(year, month)[1]))


def current_period(terms: ContractTerms, policy: Policy, day: date) -> tuple[date, date] | None:
    """The period that contains `day` (first and last day), or None outside all periods."""
    if day < terms.effective:
        return None
    renewal = policy.entitlement.renewal
    term = terms.term_months or (renewal.term_months if renewal else None)
    tacit = terms.tacit_renewal if terms.tacit_renewal is not None else bool(renewal and renewal.tacit)
    if term is None:
        return terms.effective, date.max
    elapsed = (day.year - terms.effective.year) * 12 + day.month - terms.effective.month
    index = max(elapsed // term, 0)
    while index > 0 and add_months(terms.effective, index * term) > day:
        index -= 1  # the anniversary day of this month is still ahead
    if index > 0 and not tacit:
        return None
    start = add_months(terms.effective, index * term)
    return start, add_months(terms.effective, (index + 1) * term) - timedelta(days=1)


def evaluate(terms: ContractTerms, policy: Policy, invoices: list[InvoiceState], day: date) -> Verdict:
    """Every clause of the policy on `day`; all reasons are collected, not just the first."""
    reasons: list[str] = []
    period = current_period(terms, policy, day)
    clauses = policy.entitlement
    if day < terms.effective:
        reasons.append(f"contract {terms.number} takes effect on {long_date(terms.effective)}")
    elif terms.terminated is not None and day > terms.terminated:
        reasons.append(f"contract {terms.number} was terminated on {long_date(terms.terminated)}")
    elif period is None and clauses.subscription_required:
        ended = _last_day_of_first_term(terms, policy)
        reasons.append(f"contract {terms.number} ended on {long_date(ended)} and was not renewed")
    if terms.free_use and clauses.free_use_excluded:
        reasons.append(f"contract {terms.number} is a free use (trial) subscription, which "
                       f"does not include support")
    if clauses.unpaid_fees:
        reasons += [_unpaid(invoice) for invoice in invoices if _counts_as_unpaid(invoice, policy, day)]
    return Verdict(not reasons, tuple(reasons), period)


def _last_day_of_first_term(terms: ContractTerms, policy: Policy) -> date:
    renewal = policy.entitlement.renewal
    term = terms.term_months or (renewal.term_months if renewal else None) or 0
    return add_months(terms.effective, term) - timedelta(days=1)


def _counts_as_unpaid(invoice: InvoiceState, policy: Policy, day: date) -> bool:
    rule = policy.entitlement.unpaid_fees
    if rule is None or (invoice.disputed and rule.ignore_disputed):
        return False
    if invoice.paid is not None and invoice.paid <= day:
        return False
    anchor = (invoice.period_start or invoice.issued) if rule.anchor == "period_start" else invoice.due
    return day > anchor + timedelta(days=rule.days)


def _unpaid(invoice: InvoiceState) -> str:
    disputed = " (disputed)" if invoice.disputed else ""
    return f"invoice {invoice.number}{disputed}, due {long_date(invoice.due)}, is unpaid"


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def long_date(day: date) -> str:
    """31 March 2026: unambiguous in every country, unlike 03/31/2026; not the locale's."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


@dataclass(frozen=True)
class Assessment:
    """The contract that applies to a request and the verdict on it."""

    contract: ContractTerms | None
    policy: Policy | None
    verdict: Verdict


def assess(sender: Sender, contracts: list[tuple[ContractTerms, list[InvoiceState]]], rules: Rules,
           at: datetime) -> Assessment:
    """Who wrote and when → which contract and whether it entitles them. The newest contract
    that entitles wins; when none does, the newest one's reasons are given. Each contract is
    judged on the arrival day in its own calendar's time zone."""
    customer = sender.customer
    if customer is None:
        return Assessment(None, None, Verdict(False, (f"{sender.address} is not the address of a known customer",)))
    if not contracts:
        return Assessment(None, None, Verdict(False, (f"there is no contract on record for {customer.name}",)))
    first = None
    for terms, invoices in sorted(contracts, key=lambda c: c[0].effective, reverse=True):
        policy = rules.policies[terms.policy]
        verdict = evaluate(terms, policy, invoices, at.astimezone(rules.calendar_for(policy).tz).date())
        if policy.contacts == "listed" and not sender.registered:
            verdict = Verdict(False, (f"{sender.address} is not a registered contact of {customer.name}; "
                                      f"under {policy.name}, support is for the people "
                                      f"{customer.name} has registered",) + verdict.reasons, verdict.period)
        if verdict.entitled:
            return Assessment(terms, policy, verdict)
        first = first or Assessment(terms, policy, verdict)
    return first
