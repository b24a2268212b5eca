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
from bot.wording import long_date


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
    id: int | None = None  # the database row, once stored


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
        reasons.append(Reason.of("not_started", contract=terms.number, date=terms.effective))
    elif terms.terminated is not None and day > terms.terminated:
        reasons.append(Reason.of("terminated", contract=terms.number, date=terms.terminated))
    elif period is None and clauses.subscription_required:
        ended = _last_day_of_first_term(terms, policy)
        reasons.append(Reason.of("expired", contract=terms.number, date=ended))
    if terms.free_use and clauses.free_use_excluded:
        reasons.append(Reason.of("free_use", contract=terms.number))
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


def _unpaid(invoice: InvoiceState) -> Reason:
    return Reason.of("unpaid_disputed" if invoice.disputed else "unpaid", invoice=invoice.number, date=invoice.due)


BILINGUAL = "en+fr"  # a mail in both languages: for a customer whose language we do not serve

# Reasons in words, per language; {date} values are written as long dates.
REASONS = {
    "en": {
        "not_started": "contract {contract} takes effect on {date}",
        "terminated": "contract {contract} was terminated on {date}",
        "expired": "contract {contract} ended on {date} and was not renewed",
        "free_use": "contract {contract} is a free use (trial) subscription, which does not include support",
        "unpaid": "invoice {invoice}, due {date}, is unpaid",
        "unpaid_disputed": "invoice {invoice} (disputed), due {date}, is unpaid",
        "unknown_sender": "{address} is not the address of a known customer",
        "no_contract": "there is no contract on record for {customer}",
        "not_registered": "{address} is not a registered contact of {customer}; under {policy}, "
                          "support is for the people {customer} has registered",
        "language": "the request is written in {language}; support is provided in {served}",
    },
    "fr": {
        "not_started": "le contrat {contract} prend effet le {date}",
        "terminated": "le contrat {contract} a été résilié le {date}",
        "expired": "le contrat {contract} a pris fin le {date} et n'a pas été renouvelé",
        "free_use": "le contrat {contract} est un abonnement d'utilisation gratuite (essai), "
                    "qui ne comprend pas de support",
        "unpaid": "la facture {invoice}, échue le {date}, n'est pas réglée",
        "unpaid_disputed": "la facture {invoice} (contestée), échue le {date}, n'est pas réglée",
        "unknown_sender": "{address} n'est pas l'adresse d'un client connu",
        "no_contract": "aucun contrat n'est enregistré pour {customer}",
        "not_registered": "{address} n'est pas un contact enregistré de {customer} ; au titre de "
                          "{policy}, le support est réservé aux personnes que {customer} a enregistrées",
        "language": "la demande est rédigée en {language} ; le support est assuré en {served}",
    },
}


class Reason(str):
    """A reason in English (what the audit trail keeps), which can also say itself in the
    customer's language for the mail they receive."""

    key: str
    values: dict[str, Any]

    @classmethod
    def of(cls, key: str, **values: Any) -> "Reason":
        reason = cls(_words(key, values, "en"))
        reason.key, reason.values = key, values
        return reason

    def text(self, language: str = "en") -> str:
        return _words(self.key, self.values, language if language in REASONS else "en")


def _words(key: str, values: dict[str, Any], language: str) -> str:
    from bot.language import language_name
    shown = {}
    for name, value in values.items():
        if isinstance(value, date):
            value = long_date(value, language)
        elif name in ("language", "served"):  # language codes, named in the reader's language
            value = " / ".join(language_name(code, language) for code in value.split("+"))
        shown[name] = value
    return REASONS[language][key].format(**shown)


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
        return Assessment(None, None, Verdict(False, (Reason.of("unknown_sender", address=sender.address),)))
    if not contracts:
        return Assessment(None, None, Verdict(False, (Reason.of("no_contract", customer=customer.name),)))
    first = None
    for terms, invoices in sorted(contracts, key=lambda c: c[0].effective, reverse=True):
        policy = rules.policies[terms.policy]
        verdict = evaluate(terms, policy, invoices, at.astimezone(rules.calendar_for(policy).tz).date())
        if policy.contacts == "listed" and not sender.registered:
            verdict = Verdict(False, (Reason.of("not_registered", address=sender.address, customer=customer.name,
                                                policy=policy.name),) + verdict.reasons, verdict.period)
        if verdict.entitled:
            return Assessment(terms, policy, verdict)
        first = first or Assessment(terms, policy, verdict)
    return first
