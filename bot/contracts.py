"""Contract data from the operator's files: customers, domains, contacts, contracts, invoices.

`supportbot contracts import FILE` reads a YAML file (the whole picture of some customers)
or a CSV of invoices (a billing export). Every row is checked first, with the file and line
of the first problem; only then is the file written, in one transaction, as an upsert on
natural keys (customer key, domain, contact address, contract and invoice numbers), so
importing the same file twice changes nothing and a bad row leaves nothing half-imported.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import Engine

from bot.config import fail
from bot.entitlement import ContractTerms, InvoiceState
from bot.identify import CustomerRef, Sender, domain_candidates, identify
from bot.models import Contact, Contract, Customer, CustomerDomain, Invoice
from bot.rules import Key, Lang, RulesError, Rules, YamlSource, load_yaml_file

CUSTOMERS, DOMAINS, CONTACTS, CONTRACTS, INVOICES = (
    m.__table__ for m in (Customer, CustomerDomain, Contact, Contract, Invoice))
CSV_COLUMNS = ("number", "customer", "contract", "issued", "due", "period_start", "paid", "disputed")


class ContractsError(RulesError):
    """A problem in a contracts file, with file, line and key."""


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _lower_address(value: Any) -> str:
    if not isinstance(value, str) or value.count("@") != 1 or any(c.isspace() for c in value) \
            or not all(value.split("@")):
        raise fail(f"{value!r} is not an e-mail address")
    return value.lower()


class ContactRow(_Row):
    address: str
    name: str = ""
    role: str = ""

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, value: Any) -> str:
        return _lower_address(value)


def _number(value: Any) -> Any:
    """Numbers such as 1001 may be written without quotes."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ContractRow(_Row):
    number: str = Field(min_length=1, max_length=64)

    _number = field_validator("number", mode="before")(classmethod(lambda cls, v: _number(v)))
    policy: Key
    effective: date
    term_months: int | None = Field(None, ge=1)
    tacit_renewal: bool | None = None
    notice_months: int | None = Field(None, ge=0)
    terminated: date | None = None
    free_use: bool = False
    overrides: dict[str, Any] | None = None


class InvoiceRow(_Row):
    number: str = Field(min_length=1, max_length=64)
    contract: str | None = None

    _numbers = field_validator("number", "contract", mode="before")(classmethod(lambda cls, v: _number(v)))
    issued: date
    due: date
    period_start: date | None = None
    paid: date | None = None
    disputed: bool = False


class CustomerRow(_Row):
    key: Key
    name: str = Field(min_length=1, max_length=200)
    language: Lang | None = None
    domains: tuple[str, ...] = ()
    contacts: tuple[ContactRow, ...] = ()
    contracts: tuple[ContractRow, ...] = ()
    invoices: tuple[InvoiceRow, ...] = ()

    @field_validator("domains", mode="before")
    @classmethod
    def _domains(cls, values: Any) -> Any:
        if isinstance(values, list):
            for value in values:
                if not isinstance(value, str) or "." not in value.strip(".") or "@" in value \
                        or any(c.isspace() for c in value):
                    raise fail(f"{value!r} is not a mail domain such as example.com")
            return tuple(value.lower().strip(".") for value in values)
        return values


class ContractsFile(_Row):
    customers: tuple[CustomerRow, ...]


@dataclass
class ImportReport:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)

    def count(self, table: str, created: bool) -> None:
        into = self.created if created else self.updated
        into[table] = into.get(table, 0) + 1

    def __str__(self) -> str:
        tables = ("customers", "domains", "contacts", "contracts", "invoices")
        parts = [f"{t}: {self.created.get(t, 0)} new, {self.updated.get(t, 0)} updated"
                 for t in tables if t in self.created or t in self.updated]
        return "; ".join(parts) or "no changes: the database already holds this file's data"


def import_file(engine: Engine, path: Path, rules: Rules) -> ImportReport:
    """Check the whole file, then upsert it in one transaction."""
    if path.suffix.lower() == ".csv":
        invoices = _read_invoice_csv(path)
        with engine.begin() as db:
            report = ImportReport()
            for line, customer, row in invoices:
                customer_id = db.execute(sa.select(CUSTOMERS.c.id).where(CUSTOMERS.c.key == customer)).scalar()
                if customer_id is None:
                    raise ContractsError(str(path), line, "customer", f"unknown customer {customer!r}")
                _upsert_invoice(db, customer_id, row, report,
                                lambda message, line=line: ContractsError(str(path), line, "contract", message))
            return report
    data, source = load_yaml_file(path, ContractsFile)
    _check(data, source, rules)
    with engine.begin() as db:
        report = ImportReport()
        for i, customer in enumerate(data.customers):
            _upsert_customer(db, customer, report,
                             lambda loc, message, i=i: source.error(("customers", i) + loc, message))
        return report


def _check(data: ContractsFile, source: YamlSource, rules: Rules) -> None:
    """What the field types cannot say: unique keys across the file, known policies, valid
    overrides, dates in order, invoices naming one of their customer's contracts."""
    if not data.customers:
        raise source.error(("customers",), "lists no customer")
    seen: dict[str, dict[str, tuple]] = {"key": {}, "domain": {}, "address": {}, "contract": {}, "invoice": {}}

    def once(kind: str, value: str, loc: tuple) -> None:
        if value in seen[kind]:
            first = source.error(seen[kind][value], "").line
            raise source.error(loc, f"{value!r} appears twice (first at line {first})")
        seen[kind][value] = loc

    for i, customer in enumerate(data.customers):
        at = ("customers", i)
        once("key", customer.key, at + ("key",))
        for j, domain in enumerate(customer.domains):
            once("domain", domain, at + ("domains", j))
        for j, contact in enumerate(customer.contacts):
            once("address", contact.address, at + ("contacts", j, "address"))
        for j, contract in enumerate(customer.contracts):
            here = at + ("contracts", j)
            once("contract", contract.number, here + ("number",))
            policy = rules.policies.get(contract.policy)
            if policy is None:
                raise source.error(here + ("policy",), f"unknown policy {contract.policy!r} (known: "
                                   f"{', '.join(sorted(rules.policies))})")
            if contract.terminated and contract.terminated < contract.effective:
                raise source.error(here + ("terminated",), "is before the effective date")
            try:
                policy.with_overrides(rules.calendar_for(policy), contract.overrides)
            except ValueError as error:
                raise source.error(here + ("overrides",), str(error)) from None
        numbers = {contract.number for contract in customer.contracts}
        for j, invoice in enumerate(customer.invoices):
            here = at + ("invoices", j)
            once("invoice", invoice.number, here + ("number",))
            if invoice.due < invoice.issued:
                raise source.error(here + ("due",), "is before the issue date")
            if invoice.contract is not None and invoice.contract not in numbers:
                raise source.error(here + ("contract",), f"{invoice.contract!r} is not one of "
                                   f"{customer.key}'s contracts in this file")


def _read_invoice_csv(path: Path) -> list[tuple[int, str, InvoiceRow]]:
    file = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("number", "customer", "issued", "due") if c not in (reader.fieldnames or ())]
            if missing:
                raise ContractsError(file, 1, "", f"missing column(s): {', '.join(missing)} "
                                     f"(columns: {', '.join(CSV_COLUMNS)})")
            unknown = [c for c in reader.fieldnames if c not in CSV_COLUMNS]
            if unknown:
                raise ContractsError(file, 1, "", f"unknown column(s): {', '.join(unknown)}")
            rows, seen = [], {}
            for record in reader:
                line = reader.line_num
                rows.append((line, (record.get("customer") or "").strip(), _invoice_from_csv(file, line, record)))
                number = rows[-1][2].number
                if number in seen:
                    raise ContractsError(file, line, "number", f"{number!r} appears twice (first at line {seen[number]})")
                seen[number] = line
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ContractsError(file, None, "", f"cannot read the file: {error}") from None
    return rows


def _invoice_from_csv(file: str, line: int, record: dict) -> InvoiceRow:
    values: dict[str, Any] = {}
    for column in ("number", "contract", "issued", "due", "period_start", "paid", "disputed"):
        text = (record.get(column) or "").strip()
        if not text:
            continue
        if column in ("issued", "due", "period_start", "paid"):
            try:
                values[column] = date.fromisoformat(text)
            except ValueError:
                raise ContractsError(file, line, column, f"{text!r} is not a date (YYYY-MM-DD)") from None
        elif column == "disputed":
            if text.lower() not in ("yes", "no", "true", "false", "1", "0"):
                raise ContractsError(file, line, column, f"{text!r}: expected yes or no")
            values[column] = text.lower() in ("yes", "true", "1")
        else:
            values[column] = text
    for required in ("number", "issued", "due"):
        if required not in values:
            raise ContractsError(file, line, required, "is empty")
    if not (record.get("customer") or "").strip():
        raise ContractsError(file, line, "customer", "is empty")
    if values["due"] < values["issued"]:
        raise ContractsError(file, line, "due", "is before the issue date")
    return InvoiceRow(**values)


# --- writing ----------------------------------------------------------------------------


def _upsert(db: sa.Connection, table: sa.Table, key: dict, values: dict, report: ImportReport,
            name: str) -> int | None:
    """Insert or update the row with `key`; returns its id (None for tables without one)."""
    where = [table.c[k] == v for k, v in key.items()]
    existing = db.execute(sa.select(table).where(*where)).first()
    if existing is None:
        result = db.execute(sa.insert(table).values(**key, **values))
        report.count(name, created=True)
        return result.inserted_primary_key[0]
    if any(getattr(existing, k) != v for k, v in values.items()):  # (JSON has no SQL equality)
        db.execute(sa.update(table).where(*where).values(**values))
        report.count(name, created=False)
    return existing[0]


def _upsert_customer(db: sa.Connection, row: CustomerRow, report: ImportReport, error) -> None:
    customer_id = _upsert(db, CUSTOMERS, {"key": row.key}, {"name": row.name, "language": row.language},
                          report, "customers")
    for domain in row.domains:
        _upsert(db, DOMAINS, {"domain": domain}, {"customer_id": customer_id}, report, "domains")
    for contact in row.contacts:
        _upsert(db, CONTACTS, {"address": contact.address},
                {"name": contact.name, "role": contact.role, "customer_id": customer_id}, report, "contacts")
    for contract in row.contracts:
        owner = db.execute(sa.select(CONTRACTS.c.customer_id).where(CONTRACTS.c.number == contract.number)).scalar()
        if owner is not None and owner != customer_id:
            raise error(("contracts",), f"contract {contract.number!r} belongs to another customer")
        _upsert(db, CONTRACTS, {"number": contract.number}, dict(
            customer_id=customer_id, policy=contract.policy, effective_on=contract.effective,
            term_months=contract.term_months, tacit_renewal=contract.tacit_renewal,
            notice_months=contract.notice_months, terminated_on=contract.terminated,
            free_use=contract.free_use, overrides=contract.overrides), report, "contracts")
    for invoice in row.invoices:
        _upsert_invoice(db, customer_id, invoice, report, lambda message: error(("invoices",), message))


def _upsert_invoice(db: sa.Connection, customer_id: int, row: InvoiceRow, report: ImportReport, error) -> None:
    contract_id = None
    if row.contract is not None:
        contract_id = db.execute(sa.select(CONTRACTS.c.id).where(
            CONTRACTS.c.number == row.contract, CONTRACTS.c.customer_id == customer_id)).scalar()
        if contract_id is None:
            raise error(f"{row.contract!r} is not a contract of this customer")
    owner = db.execute(sa.select(INVOICES.c.customer_id).where(INVOICES.c.number == row.number)).scalar()
    if owner is not None and owner != customer_id:
        raise error(f"invoice {row.number!r} belongs to another customer")
    _upsert(db, INVOICES, {"number": row.number}, dict(
        customer_id=customer_id, contract_id=contract_id, issued_on=row.issued, due_on=row.due,
        period_start=row.period_start, paid_on=row.paid, disputed=row.disputed), report, "invoices")


# --- reading ----------------------------------------------------------------------------


def contract_lines(engine: Engine) -> list[str]:
    """One line per contract for `supportbot contracts list`, with its unpaid invoices."""
    query = (sa.select(CUSTOMERS.c.key, CUSTOMERS.c.name, CONTRACTS)
             .join(CONTRACTS, CONTRACTS.c.customer_id == CUSTOMERS.c.id)
             .order_by(CUSTOMERS.c.key, CONTRACTS.c.number))
    lines = []
    with engine.connect() as db:
        unpaid = dict(list(db.execute(
            sa.select(INVOICES.c.customer_id, sa.func.count()).where(INVOICES.c.paid_on.is_(None))
            .group_by(INVOICES.c.customer_id))))
        for row in db.execute(query):
            term = f"{row.term_months} months" if row.term_months else "policy term"
            state = [f"terminated {row.terminated_on}"] if row.terminated_on else []
            state += ["free use"] if row.free_use else []
            state += [f"{unpaid[row.customer_id]} unpaid invoice(s)"] if unpaid.get(row.customer_id) else []
            state += ["overrides: " + ", ".join(sorted(row.overrides))] if row.overrides else []
            lines.append(f"{row.number:<16} {row.key:<16} {row.policy:<18} from {row.effective_on}, {term}"
                         + (f"; {'; '.join(state)}" if state else ""))
    return lines or ["no contracts (import some with: supportbot contracts import FILE)"]


def pay_invoice(engine: Engine, number: str, on: date) -> bool:
    with engine.begin() as db:
        return db.execute(sa.update(INVOICES).where(INVOICES.c.number == number)
                          .values(paid_on=on)).rowcount > 0


Terms = list[tuple[ContractTerms, list[InvoiceState]]]


def sender_and_contracts(db: sa.Connection, address: str) -> tuple[Sender, Terms]:
    """Who `address` is, and the contracts and invoices of their customer (read-only)."""
    return directory(db, [address])[address.lower()]


def _where_in(query: sa.Select, column) -> sa.Select:
    return query.where(column.in_(sa.bindparam("values", expanding=True)))


# Built once: building a statement costs more than running it (a slice of mail runs each).
_CONTACTS_IN = _where_in(sa.select(CUSTOMERS, CONTACTS.c.address, CONTACTS.c.name.label("contact_name"))
                         .join(CONTACTS, CONTACTS.c.customer_id == CUSTOMERS.c.id), CONTACTS.c.address)
_DOMAINS_IN = _where_in(sa.select(CUSTOMERS, DOMAINS.c.domain)
                        .join(DOMAINS, DOMAINS.c.customer_id == CUSTOMERS.c.id), DOMAINS.c.domain)
_INVOICES_OF = _where_in(sa.select(INVOICES), INVOICES.c.customer_id)
_CONTRACTS_OF = _where_in(sa.select(CONTRACTS), CONTRACTS.c.customer_id)


def _rows(db: sa.Connection, query: sa.Select, values: set) -> list:
    return list(db.execute(query, {"values": sorted(values)})) if values else []


def directory(db: sa.Connection, addresses) -> dict[str, tuple[Sender, Terms]]:
    """The same for many senders at once, in a handful of queries (a slice of mail)."""
    addresses = {address.lower() for address in addresses}
    contacts = {row.address: (_customer_ref(row), row.contact_name) for row in _rows(db, _CONTACTS_IN, addresses)}
    candidates = {domain for address in addresses for domain in domain_candidates(address)}
    domains = {row.domain: _customer_ref(row) for row in _rows(db, _DOMAINS_IN, candidates)}
    senders = {address: identify(address, contacts, domains) for address in addresses}
    customers = {s.customer.id for s in senders.values() if s.customer}
    invoices: dict[tuple[int, int | None], list[InvoiceState]] = {}
    for row in _rows(db, _INVOICES_OF, customers):
        invoices.setdefault((row.customer_id, row.contract_id), []).append(InvoiceState(
            row.number, row.issued_on, row.due_on, row.period_start, row.paid_on, row.disputed))
    terms: dict[int, Terms] = {}
    for row in _rows(db, _CONTRACTS_OF, customers):
        owner = row.customer_id
        terms.setdefault(owner, []).append((
            _terms(row), invoices.get((owner, row.id), []) + invoices.get((owner, None), [])))
    return {address: (sender, terms.get(sender.customer.id, []) if sender.customer else [])
            for address, sender in senders.items()}


def contract_terms(engine: Engine, number_or_id: str) -> ContractTerms | None:
    """A contract by its number, or else by its row id."""
    with engine.connect() as db:
        row = db.execute(sa.select(CONTRACTS).where(CONTRACTS.c.number == number_or_id)).first()
        if row is None and number_or_id.isdigit():
            row = db.execute(sa.select(CONTRACTS).where(CONTRACTS.c.id == int(number_or_id))).first()
    return row and _terms(row)


def _terms(row) -> ContractTerms:
    return ContractTerms(row.number, row.policy, row.effective_on, row.term_months, row.tacit_renewal,
                         row.terminated_on, row.free_use, row.overrides, row.id)


def _customer_ref(row) -> CustomerRef:
    return CustomerRef(row.id, row.key, row.name, row.language)
