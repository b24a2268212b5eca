"""Entitlement clauses of both reference policies at and around their boundary dates."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest

from bot.entitlement import ContractTerms, InvoiceState, add_months, current_period, evaluate
from bot.rules import load_rules

RULES = load_rules()
KESTRA, STANDARD, ASTRAN = (RULES.policies[n] for n in ("kestra-enterprise", "kestra-standard", "astran-standard"))
D = date.fromisoformat

ACME = ContractTerms("KEA-2025-014", "kestra-enterprise", D("2025-03-01"))  # policy term: 12 months, tacit
UMBRELLA = ContractTerms("KEA-2025-009", "kestra-enterprise", D("2025-06-01"), tacit_renewal=False)
HOOLI = ContractTerms("AST-2025-012", "astran-standard", D("2025-01-01"), 12, terminated=D("2026-09-30"))
INITECH = ContractTerms("AST-2024-007", "astran-standard", D("2024-06-01"), 12)
OPEN_ENDED = ContractTerms("AST-0", "astran-standard", D("2024-06-01"))  # the Order sets no term
TRIAL = ContractTerms("AST-TRIAL-77", "astran-standard", D("2026-11-01"), 1, free_use=True)
KESTRA_TRIAL = ContractTerms("KEA-T", "kestra-enterprise", D("2026-11-01"), free_use=True)


@pytest.mark.parametrize("terms, policy, day, entitled, reason, period", [
    (ACME, KESTRA, "2025-02-28", False, "contract KEA-2025-014 takes effect on 1 March 2025", None),
    (ACME, KESTRA, "2025-03-01", True, None, ("2025-03-01", "2026-02-28")),
    (ACME, KESTRA, "2026-02-28", True, None, ("2025-03-01", "2026-02-28")),
    (ACME, KESTRA, "2026-03-01", True, None, ("2026-03-01", "2027-02-28")),  # tacitly renewed
    (ACME, KESTRA, "2028-02-29", True, None, ("2027-03-01", "2028-02-29")),  # leap year
    (UMBRELLA, KESTRA, "2026-05-31", True, None, ("2025-06-01", "2026-05-31")),
    (UMBRELLA, KESTRA, "2026-06-01", False, "contract KEA-2025-009 ended on 31 May 2026 and was not renewed", None),
    (HOOLI, ASTRAN, "2026-09-30", True, None, ("2026-01-01", "2026-12-31")),
    (HOOLI, ASTRAN, "2026-10-01", False, "contract AST-2025-012 was terminated on 30 September 2026",
     ("2026-01-01", "2026-12-31")),
    (INITECH, ASTRAN, "2026-11-23", True, None, ("2026-06-01", "2027-05-31")),
    (OPEN_ENDED, ASTRAN, "2031-01-01", True, None, ("2024-06-01", "9999-12-31")),
    (TRIAL, ASTRAN, "2026-11-23", False, "contract AST-TRIAL-77 is a free use (trial) subscription, "
     "which does not include support", ("2026-11-01", "2026-11-30")),
    (KESTRA_TRIAL, KESTRA, "2026-11-23", True, None, ("2026-11-01", "2027-10-31")),  # no free-use clause
])
def test_subscription_periods_terminations_and_free_use(terms, policy, day, entitled, reason, period):
    verdict = evaluate(terms, policy, [], D(day))
    assert verdict.entitled is entitled
    assert verdict.reasons == ((reason,) if reason else ())
    assert verdict.period == (tuple(map(D, period)) if period else None)


KESTRA_INVOICE = InvoiceState("INV-2207", issued=D("2026-07-01"), due=D("2026-07-31"), period_start=D("2026-07-01"))


@pytest.mark.parametrize("invoice, day, entitled", [
    (KESTRA_INVOICE, "2026-09-29", True),  # day 90 after the start of the period it bills
    (KESTRA_INVOICE, "2026-09-30", False),  # day 91
    (replace(KESTRA_INVOICE, paid=D("2026-09-30")), "2026-09-30", True),
    (replace(KESTRA_INVOICE, paid=D("2026-10-02")), "2026-10-01", False),
    (replace(KESTRA_INVOICE, paid=D("2026-10-02")), "2026-10-02", True),
    (replace(KESTRA_INVOICE, disputed=True), "2026-09-30", False),  # disputes count
    (replace(KESTRA_INVOICE, period_start=None), "2026-09-30", False),  # issue date
])
def test_kestra_fees_unpaid_90_days_after_the_period_start(invoice, day, entitled):
    soylent = ContractTerms("KEA-2024-021", "kestra-enterprise", D("2024-07-01"))
    verdict = evaluate(soylent, KESTRA, [invoice], D(day))
    assert verdict.entitled is entitled
    if not entitled:
        disputed = " (disputed)" if invoice.disputed else ""
        assert verdict.reasons == (f"invoice INV-2207{disputed}, due 31 July 2026, is unpaid",)


ASTRAN_INVOICE = InvoiceState("AST-INV-388", issued=D("2026-10-01"), due=D("2026-10-31"))


@pytest.mark.parametrize("invoice, day, entitled", [
    (ASTRAN_INVOICE, "2026-10-30", True),
    (ASTRAN_INVOICE, "2026-10-31", True),  # the due date itself
    (ASTRAN_INVOICE, "2026-11-01", False),  # not paid when due
    (replace(ASTRAN_INVOICE, paid=D("2026-10-31")), "2026-11-01", True),
    (replace(ASTRAN_INVOICE, disputed=True), "2026-12-01", True),  # §10
])
def test_astran_fees_not_paid_when_due(invoice, day, entitled):
    vandelay = ContractTerms("AST-2025-044", "astran-standard", D("2025-11-01"), 12)
    verdict = evaluate(vandelay, ASTRAN, [invoice], D(day))
    assert verdict.entitled is entitled
    if not entitled:
        assert verdict.reasons == ("invoice AST-INV-388, due 31 October 2026, is unpaid",)


def test_kestra_standard_has_no_fee_clause_and_every_reason_is_given():
    globex = ContractTerms("KEA-2026-002", "kestra-standard", D("2026-02-01"))
    assert evaluate(globex, STANDARD, [KESTRA_INVOICE], D("2026-11-23")).entitled
    late = ContractTerms("AST-9", "astran-standard", D("2025-01-01"), 12, terminated=D("2026-01-31"), free_use=True)
    reasons = evaluate(late, ASTRAN, [ASTRAN_INVOICE], D("2026-11-23")).reasons
    assert len(reasons) == 3 and reasons[0].startswith("contract AST-9 was terminated on 31 January 2026")


def test_periods_tile_the_calendar_without_gap_or_overlap():
    for effective, term in [(D("2024-01-31"), 1), (D("2024-02-29"), 12), (D("2025-03-01"), 3)]:
        terms = ContractTerms("X", "astran-standard", effective, term)
        day, previous = effective, None
        while day < effective + timedelta(days=800):
            start, end = current_period(terms, ASTRAN, day)
            assert start <= day <= end
            if previous and previous != (start, end):
                assert start == previous[1] + timedelta(days=1)
            previous, day = (start, end), day + timedelta(days=1)


@pytest.mark.parametrize("day, count, expected", [
    ("2024-01-31", 1, "2024-02-29"), ("2025-01-31", 1, "2025-02-28"), ("2025-12-15", 1, "2026-01-15"),
    ("2024-02-29", 12, "2025-02-28"), ("2025-03-31", -1, "2025-02-28"),
])
def test_add_months_keeps_the_day_or_takes_the_months_last(day, count, expected):
    assert add_months(D(day), count) == D(expected)
