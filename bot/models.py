"""Database tables. Times are stored in UTC; the calendar converts for people."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator):
    """Store aware datetimes as naive UTC and give them back aware, on every backend."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


def _when(nullable: bool = True, index: bool = False):
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"
    id: Optional[int] = Field(default=None, primary_key=True)
    reference: str = Field(max_length=32, unique=True)
    requester: str = Field(max_length=320, index=True)
    requester_name: str = Field(default="", max_length=200)
    subject: str = Field(max_length=998)
    language: str = Field(default="en", max_length=8)
    # open (entitled), refused (not entitled: the reasons are in the audit trail) or
    # unidentified (an unknown sender, sent to triage)
    status: str = Field(default="open", max_length=20, index=True)
    customer_id: Optional[int] = Field(default=None, foreign_key="customers.id", index=True)
    contract_id: Optional[int] = Field(default=None, foreign_key="contracts.id")
    flags: str = Field(default="", max_length=400)  # possibly excluded matters, comma-separated
    # 1 is the most severe; set for an entitled request. severity_source: evidence, declared,
    # default (nothing found) or agent (changed by hand; the deadline follows).
    severity: Optional[int] = None
    severity_source: str = Field(default="", max_length=20)
    received_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    acknowledged_at: Optional[datetime] = _when()
    first_response_at: Optional[datetime] = _when()
    deadline_at: Optional[datetime] = _when(index=True)  # first response due; none: best effort
    warn_at: Optional[datetime] = _when()  # managers are warned from then on


class Message(SQLModel, table=True):
    """Every mail read from the mailbox, once. `message_key` makes re-reads idempotent."""

    __tablename__ = "messages"
    __table_args__ = (sa.Index("ix_messages_location", "folder", "uidvalidity", "uid"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    message_key: str = Field(max_length=1000, unique=True)
    message_id: Optional[str] = Field(default=None, max_length=1000, index=True)
    folder: str = Field(max_length=200)
    uidvalidity: int = Field(sa_type=sa.BigInteger)
    uid: int = Field(sa_type=sa.BigInteger)
    direction: str = Field(default="in", max_length=8)
    kind: str = Field(max_length=32)
    sender: Optional[str] = Field(default=None, max_length=320)
    subject: str = Field(default="", max_length=998)
    raw_sha256: str = Field(max_length=64, index=True)
    size: int = 0
    received_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    processed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ticket_id: Optional[int] = Field(default=None, foreign_key="tickets.id", index=True)
    reason: str = Field(default="", max_length=2000)


class Event(SQLModel, table=True):
    """Append-only audit trail: every decision with its reasons."""

    __tablename__ = "events"
    id: Optional[int] = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ticket_id: Optional[int] = Field(default=None, foreign_key="tickets.id", index=True)
    message_id: Optional[int] = Field(default=None, foreign_key="messages.id")
    kind: str = Field(max_length=40)
    detail: str = Field(default="", sa_type=sa.Text)


class OutboxMail(SQLModel, table=True):
    """A rendered mail waiting for delivery; written in the transaction that decided it."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_due", "status", "next_attempt_at"),
                      sa.Index("ix_outbox_recipient_created", "recipient", "created_at"))
    id: Optional[int] = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=1000, unique=True)
    ticket_id: Optional[int] = Field(default=None, foreign_key="tickets.id", index=True)
    purpose: str = Field(max_length=40)
    recipient: str = Field(max_length=320)
    raw: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    status: str = Field(default="pending", max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    claimed_by: Optional[str] = Field(default=None, max_length=200)
    claimed_until: Optional[datetime] = _when()
    sent_at: Optional[datetime] = _when()
    last_error: str = Field(default="", max_length=2000)


class MailboxState(SQLModel, table=True):
    __tablename__ = "mailbox_state"
    folder: str = Field(primary_key=True, max_length=200)
    uidvalidity: int = Field(sa_type=sa.BigInteger)
    last_uid: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class Counter(SQLModel, table=True):
    """Named sequences (ticket numbers) that work the same on SQLite and PostgreSQL."""

    __tablename__ = "counters"
    name: str = Field(primary_key=True, max_length=40)
    value: int = Field(default=0, sa_type=sa.BigInteger)


# --- contracts: who may write, under which terms (imported: bot/contracts.py) -------------


class Customer(SQLModel, table=True):
    __tablename__ = "customers"
    id: Optional[int] = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)  # the operator's name for it, stable across imports
    name: str = Field(max_length=200)
    language: Optional[str] = Field(default=None, max_length=8)  # preferred: en, fr


class CustomerDomain(SQLModel, table=True):
    """A mail domain of a customer; its subdomains belong to the customer too."""

    __tablename__ = "customer_domains"
    domain: str = Field(primary_key=True, max_length=253)
    customer_id: int = Field(foreign_key="customers.id", index=True)


class Contact(SQLModel, table=True):
    __tablename__ = "contacts"
    id: Optional[int] = Field(default=None, primary_key=True)
    address: str = Field(max_length=320, unique=True)  # lower case
    name: str = Field(default="", max_length=200)
    role: str = Field(default="", max_length=40)
    customer_id: int = Field(foreign_key="customers.id", index=True)


class Contract(SQLModel, table=True):
    __tablename__ = "contracts"
    id: Optional[int] = Field(default=None, primary_key=True)
    number: str = Field(max_length=64, unique=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    policy: str = Field(max_length=64)  # a file of rules/policies/, e.g. kestra-enterprise
    effective_on: date = Field(sa_type=sa.Date)
    term_months: Optional[int] = None  # None: the policy's renewal term
    tacit_renewal: Optional[bool] = None  # None: as the policy says
    notice_months: Optional[int] = None
    terminated_on: Optional[date] = Field(default=None, sa_type=sa.Date)
    free_use: bool = False  # a trial or free use period
    overrides: Optional[dict] = Field(default=None, sa_type=sa.JSON)  # e.g. an Order's Specific Support


class Invoice(SQLModel, table=True):
    __tablename__ = "invoices"
    id: Optional[int] = Field(default=None, primary_key=True)
    number: str = Field(max_length=64, unique=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    contract_id: Optional[int] = Field(default=None, foreign_key="contracts.id", index=True)
    issued_on: date = Field(sa_type=sa.Date)
    due_on: date = Field(sa_type=sa.Date)
    period_start: Optional[date] = Field(default=None, sa_type=sa.Date)  # of the period it bills
    paid_on: Optional[date] = Field(default=None, sa_type=sa.Date)
    disputed: bool = False
