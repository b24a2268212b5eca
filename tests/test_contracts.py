"""Contract data import: the sample file, idempotent upserts, and every bad row named by
file and line with nothing half-imported; on SQLite and PostgreSQL."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.config import LocatedError
from bot.contracts import contract_lines, import_file, pay_invoice
from bot.database import make_engine, upgrade
from bot.models import Contact, Contract, Customer, CustomerDomain, Invoice
from bot.rules import load_rules
from helpers import write_config
from test_cli import supportbot

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
RULES = load_rules()


@pytest.fixture
def engine(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def rows(engine, model) -> list:
    with engine.connect() as db:
        return list(db.execute(sa.select(model.__table__)))


def write(tmp_path: Path, text: str, name: str = "contracts.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_the_sample_file_imports_once_and_again_changes_nothing(engine):
    first = import_file(engine, SAMPLES / "contracts.yaml", RULES)
    assert first.created == {"customers": 12, "domains": 12, "contacts": 7, "contracts": 11, "invoices": 6}
    again = import_file(engine, SAMPLES / "contracts.yaml", RULES)
    assert (again.created, again.updated) == ({}, {})
    assert len(rows(engine, Contract)) == 11
    [tyrell] = [c for c in rows(engine, Contract) if c.number == "AST-2025-031"]
    assert tyrell.overrides["targets"] == {"urgent": "4 business hours"}
    assert {c.address for c in rows(engine, Contact)} >= {"alice.martin@acme.example"}


def test_the_sample_covers_every_case_the_entitlement_rules_need(engine):
    import_file(engine, SAMPLES / "contracts.yaml", RULES)
    contracts = {c.number: c for c in rows(engine, Contract)}
    invoices = rows(engine, Invoice)
    assert {c.policy for c in contracts.values()} == {"kestra-enterprise", "kestra-standard", "astran-standard"}
    assert contracts["KEA-2025-009"].tacit_renewal is False  # expired
    assert contracts["AST-2025-012"].terminated_on == date(2026, 9, 30)  # terminated
    assert contracts["AST-TRIAL-77"].free_use  # trial
    assert any(i.paid_on is None and not i.disputed for i in invoices)  # unpaid
    assert {i.number for i in invoices if i.disputed} == {"INV-2207", "AST-INV-402"}  # both readings
    assert "unknown.example" not in {d.domain for d in rows(engine, CustomerDomain)}


def test_a_changed_row_is_updated_in_place(engine, tmp_path):
    path = write(tmp_path, """
        customers:
          - key: acme
            name: Acme
            domains: [Acme.Example]
            contacts: [{address: Alice@Acme.Example, name: Alice}]
            contracts: [{number: K-1, policy: kestra-enterprise, effective: 2026-01-01}]
    """)
    import_file(engine, path, RULES)
    path.write_text(path.read_text().replace("name: Alice}", "name: Alice Martin}"))
    report = import_file(engine, path, RULES)
    assert (report.created, report.updated) == ({}, {"contacts": 1})
    [contact] = rows(engine, Contact)
    assert (contact.address, contact.name) == ("alice@acme.example", "Alice Martin")
    assert [d.domain for d in rows(engine, CustomerDomain)] == ["acme.example"]


GOOD_CUSTOMER = """
  - key: acme
    name: Acme
    domains: [acme.example]
    contracts: [{number: K-1, policy: kestra-enterprise, effective: 2026-01-01}]
"""


@pytest.mark.parametrize("bad, line, key, message", [
    ("  - key: Bad Key\n    name: X\n", 6, "customers[1].key", "identifier"),
    ("  - key: b\n    name: B\n    domains: [not a domain]\n", 8, "customers[1].domains", "not a mail domain"),
    ("  - key: b\n    name: B\n    domains: [acme.example]\n", 8, "customers[1].domains[0]", "appears twice (first at line 4)"),
    ("  - key: b\n    name: B\n    contracts: [{number: K-2, policy: nope, effective: 2026-01-01}]\n",
     8, "customers[1].contracts[0].policy", "unknown policy 'nope'"),
    ("  - key: b\n    name: B\n    contracts: [{number: K-2, policy: kestra-enterprise, effective: 2026-13-01}]\n",
     8, "customers[1].contracts[0].effective", "'2026-13-01' is not a valid date"),
    ("  - key: b\n    name: B\n    contracts: [{number: K-2, policy: kestra-enterprise, effective: 2026-01-01,"
     " overrides: {hours: {mon: 08:00-19:00}}}]\n",
     8, "customers[1].contracts[0].overrides", "does not allow overriding 'hours'"),
    ("  - key: b\n    name: B\n    invoices: [{number: I-1, contract: K-1, issued: 2026-01-01, due: 2026-01-31}]\n",
     8, "customers[1].invoices[0].contract", "not one of b's contracts"),
    ("  - key: b\n    name: B\n    invoices: [{number: I-1, issued: 2026-02-01, due: 2026-01-31}]\n",
     8, "customers[1].invoices[0].due", "before the issue date"),
    ("  - key: b\n    name: B\n    contacts: [{address: not-an-address}]\n", 8,
     "customers[1].contacts[0].address", "not an e-mail address"),
])
def test_a_bad_row_is_named_and_nothing_is_imported(engine, tmp_path, bad, line, key, message):
    path = write(tmp_path, "customers:" + GOOD_CUSTOMER + bad)
    with pytest.raises(LocatedError) as caught:
        import_file(engine, path, RULES)
    error = caught.value
    assert (error.file, error.line, error.key) == (str(path), line, key), str(error)
    assert message in error.message
    assert rows(engine, Customer) == []  # the good customer before it was not imported either


def test_yaml_syntax_and_shape_errors_name_the_line(engine, tmp_path):
    with pytest.raises(LocatedError, match=r"contracts.yaml:4: YAML syntax error: .* started at line 3"):
        import_file(engine, write(tmp_path, "customers:\n  - key: a\n    name: [unclosed\n"), RULES)
    with pytest.raises(LocatedError, match=r"contracts.yaml:1: customers: must"):
        import_file(engine, write(tmp_path, "customers: {}\n"), RULES)
    with pytest.raises(LocatedError, match=r"contracts.yaml:1: customers: lists no customer"):
        import_file(engine, write(tmp_path, "customers: []\n"), RULES)


def test_invoices_from_a_billing_export(engine, tmp_path):
    import_file(engine, SAMPLES / "contracts.yaml", RULES)
    report = import_file(engine, SAMPLES / "invoices.csv", RULES)
    assert (report.created, report.updated) == ({"invoices": 1}, {})  # INV-1102 is unchanged
    [new] = [i for i in rows(engine, Invoice) if i.number == "AST-INV-389"]
    assert (new.due_on, new.paid_on, new.disputed) == (date(2026, 11, 30), None, False)


@pytest.mark.parametrize("body, line, key, message", [
    ("I-9,acme,,2026-01-01,2026-31-01,,,no\n", 3, "due", "is not a date"),
    ("I-9,nobody,,2026-01-01,2026-01-31,,,no\n", 3, "customer", "unknown customer 'nobody'"),
    ("I-9,acme,K-404,2026-01-01,2026-01-31,,,no\n", 3, "contract", "'K-404' is not a contract"),
    ("I-9,acme,,2026-01-01,2026-01-31,,,maybe\n", 3, "disputed", "expected yes or no"),
    ("I-8,acme,,2026-01-01,2026-01-31,,,no\n", 3, "number", "appears twice (first at line 2)"),
])
def test_a_bad_csv_row_is_named_and_nothing_is_imported(engine, tmp_path, body, line, key, message):
    import_file(engine, write(tmp_path, "customers:" + GOOD_CUSTOMER), RULES)
    header = "number,customer,contract,issued,due,period_start,paid,disputed\n"
    path = write(tmp_path, header + "I-8,acme,K-1,2026-01-01,2026-01-31,,,no\n" + body, "billing.csv")
    with pytest.raises(LocatedError) as caught:
        import_file(engine, path, RULES)
    assert (caught.value.line, caught.value.key) == (line, key), str(caught.value)
    assert message in caught.value.message
    assert rows(engine, Invoice) == []


def test_a_csv_with_unknown_columns_is_refused(engine, tmp_path):
    path = write(tmp_path, "number,customer,issued,due,amount\n", "billing.csv")
    with pytest.raises(LocatedError, match=r"billing.csv:1: unknown column\(s\): amount"):
        import_file(engine, path, RULES)


def test_paying_an_invoice_and_listing(engine):
    import_file(engine, SAMPLES / "contracts.yaml", RULES)
    assert "1 unpaid invoice(s)" in next(line for line in contract_lines(engine) if "vandelay" in line)
    assert pay_invoice(engine, "AST-INV-388", date(2026, 11, 24))
    assert not pay_invoice(engine, "NO-SUCH", date(2026, 11, 24))
    assert "unpaid" not in next(line for line in contract_lines(engine) if "vandelay" in line)


def test_the_commands_as_an_operator_runs_them(tmp_path, dovecot):
    config = write_config(tmp_path, dovecot, None, f"sqlite:///{tmp_path / 'bot.db'}")
    assert supportbot("db", "upgrade", "--config", str(config)).returncode == 0
    imported = supportbot("contracts", "import", str(SAMPLES / "contracts.yaml"), str(SAMPLES / "invoices.csv"),
                          "--config", str(config))
    assert imported.returncode == 0, imported.stderr
    assert "customers: 12 new" in imported.stdout and "invoices: 1 new" in imported.stdout
    listing = supportbot("contracts", "list", "--config", str(config))
    assert "AST-TRIAL-77" in listing.stdout and "free use" in listing.stdout
    paid = supportbot("invoices", "pay", "AST-INV-388", "--on", "2026-11-24", "--config", str(config))
    assert paid.returncode == 0 and "paid on 2026-11-24" in paid.stdout
    bad = write(tmp_path, "customers:\n  - key: x\n    name: X\n    contracts: [{number: 7, policy: nope, effective: 2026-01-01}]\n")
    refused = supportbot("contracts", "import", str(bad), "--config", str(config))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{bad}:4: customers[0].contracts[0].policy: unknown policy 'nope'" in refused.stderr
    unknown = supportbot("invoices", "pay", "NOPE", "--config", str(config))
    assert unknown.returncode == 2 and "no invoice NOPE" in unknown.stderr
