"""The ticket store: the only writer. Applies a Decision in one transaction.

A mail's row, its ticket, its audit events and the mails it causes (outbox) commit together
or not at all; the mailbox is marked only after that commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from bot import decide as d
from bot.clock import Clock
from bot.compose import compose, stable_message_id
from bot.contracts import directory
from bot.database import snapshot
from bot.entitlement import Reason
from bot.mailbox import FetchedMail
from bot.mailthread import subject_tags, thread_ids
from bot.models import Counter, Event, MailboxState, Message, OutboxMail, Ticket
from bot.templating import Templates
from bot.wording import duration, long_moment

log = logging.getLogger(__name__)

TICKETS, MESSAGES, EVENTS, OUTBOX, COUNTERS = (
    m.__table__ for m in (Ticket, Message, Event, OutboxMail, Counter))
IN_CHUNK = 500  # values per IN (...): far below SQLite's and PostgreSQL's parameter limits


@dataclass(frozen=True)
class Sender:
    """Who our mails come from."""

    address: str
    name: str
    message_id_domain: str


@dataclass(frozen=True)
class Outcome:
    """What recording one mail did: `stored`, `known` (already read) or `duplicate`."""

    status: str
    kind: str
    ticket_reference: str | None = None
    queued: int = 0


class SliceView:
    """What decide() may know of the database, for a slice of mails.

    Read in a few queries for the whole slice, then kept current by the store as it applies
    the slice's own decisions, so a mail that answers one just before it in the same slice,
    or repeats it, is seen as such.
    """

    def __init__(self) -> None:
        self.tickets: dict[str, int | None] = {}  # reference -> id (None until inserted)
        self.thread: dict[str, str] = {}  # Message-ID of a mail read -> its ticket's reference
        self.thread_ours: dict[str, str] = {}  # Message-ID of a mail we queued -> reference
        self.originals: dict[str, dict] = {}  # message_key -> the message row that has it
        self.automatic: dict[str, list[datetime]] = {}  # recipient -> when we queued to them
        self.directory: dict[str, tuple] = {}  # sender -> (Sender, contracts with invoices)

    @classmethod
    def load(cls, db: sa.Connection, readings: list[d.Reading], since: datetime,
             policy: d.Policy) -> "SliceView":
        view = cls()
        mails = [r.mail for r in readings if r.mail]
        keys = {r.message_key for r in readings}
        for row in _select_in(db, sa.select(MESSAGES.c.id, MESSAGES.c.message_key, MESSAGES.c.kind,
                                            MESSAGES.c.folder, MESSAGES.c.uid, MESSAGES.c.ticket_id,
                                            TICKETS.c.reference)
                              .outerjoin(TICKETS, TICKETS.c.id == MESSAGES.c.ticket_id),
                              MESSAGES.c.message_key, keys):
            view.originals[row.message_key] = dict(row._mapping)
            view._know(row.reference, row.ticket_id)
        ids = {i for mail in mails for i in thread_ids(mail)}
        for table, known in ((MESSAGES, view.thread), (OUTBOX, view.thread_ours)):
            for row in _select_in(db, sa.select(table.c.message_id, TICKETS.c.id, TICKETS.c.reference)
                                  .join(TICKETS, TICKETS.c.id == table.c.ticket_id), table.c.message_id, ids):
                known[row.message_id] = row.reference
                view._know(row.reference, row.id)
        tags = {tag for mail in mails for tag in subject_tags(mail, policy.reference_prefix)}
        for row in _select_in(db, sa.select(TICKETS.c.id, TICKETS.c.reference), TICKETS.c.reference, tags):
            view._know(row.reference, row.id)
        senders = {mail.from_addr for mail in mails if mail.from_addr}
        recipients = senders | ({policy.triage_address} if policy.triage_address else set())
        for row in _select_in(db, sa.select(OUTBOX.c.recipient, OUTBOX.c.created_at)
                              .where(OUTBOX.c.created_at >= since), OUTBOX.c.recipient, recipients):
            view.automatic.setdefault(row.recipient, []).append(row.created_at)
        view.directory = directory(db, senders)
        return view

    def _know(self, reference: str | None, ticket_id: int | None) -> None:
        if reference:
            self.tickets[reference] = ticket_id

    # -- DecisionView -------------------------------------------------------------------

    def ticket_for_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        for known in (self.thread, self.thread_ours):
            for message_id in message_ids:
                if message_id in known:
                    return known[message_id]
        return None

    def ticket_exists(self, reference: str) -> bool:
        return reference in self.tickets

    def automatic_mails_to(self, address: str, since: datetime) -> int:
        return sum(1 for at in self.automatic.get(address, ()) if at >= since)

    def sender_and_contracts(self, address: str):
        return self.directory[address.lower()]


def _select_in(db: sa.Connection, query: sa.Select, column, values: set) -> list:
    """Rows of `query` whose `column` is one of `values`, in chunks that every backend takes."""
    values = sorted(values)
    return [row for first in range(0, len(values), IN_CHUNK)
            for row in db.execute(query.where(column.in_(values[first:first + IN_CHUNK])))]


class _Rows:
    """The rows a slice writes, linked by ticket reference and by message row until the
    database gives them ids; written with one statement per table."""

    def __init__(self) -> None:
        self.tickets: list[dict] = []
        self.messages: list[dict] = []
        self.events: list[tuple[str | None, dict | None, dict]] = []
        self.outbox: list[tuple[str | None, dict]] = []

    def event(self, reference: str | None, message: dict | None, at: datetime, kind: str, detail: str) -> None:
        self.events.append((reference, message, dict(at=at, kind=kind, detail=detail)))

    def write(self, db: sa.Connection, tickets: dict[str, int | None]) -> None:
        if self.tickets:
            for row in db.execute(sa.insert(TICKETS).returning(TICKETS.c.id, TICKETS.c.reference,
                                                               sort_by_parameter_order=True), self.tickets):
                tickets[row.reference] = row.id
        if self.messages:
            rows = [{k: v for k, v in m.items() if k != "reference"} | {"ticket_id": tickets.get(m["reference"])}
                    for m in self.messages]
            ids = db.execute(sa.insert(MESSAGES).returning(MESSAGES.c.id, sort_by_parameter_order=True),
                             rows).scalars().all()
            for message, message_id in zip(self.messages, ids):
                message["id"] = message_id
        if self.events:
            db.execute(sa.insert(EVENTS), [
                row | {"ticket_id": tickets.get(reference), "message_id": message and message["id"]}
                for reference, message, row in self.events])
        if self.outbox:
            db.execute(sa.insert(OUTBOX), [row | {"ticket_id": tickets.get(reference)}
                                           for reference, row in self.outbox])


class _State(NamedTuple):
    """What a slice's decisions depend on having stayed the same: the last ticket number
    and the last message and outbox rows. Only inserts change what decide() sees (known
    mails, threads, tickets, mails queued to a recipient), and every insert moves one of
    these. Contract data is read at the same moment, so it is as current as before."""

    ticket_number: int
    last_message: int
    last_outbox: int

    @classmethod
    def read(cls, db: sa.Connection, lock: bool = True) -> "_State":
        """The ticket counter first: in a write transaction it locks the row (PostgreSQL) or
        holds the write lock (SQLite), so the rest cannot move before the commit. Ingest
        instances all lock it, so they take turns."""
        query = sa.select(COUNTERS.c.value).where(COUNTERS.c.name == "ticket")
        number = db.execute(query.with_for_update() if lock else query).scalar_one()
        last = db.execute(sa.select(sa.select(sa.func.max(MESSAGES.c.id)).scalar_subquery(),
                                    sa.select(sa.func.max(OUTBOX.c.id)).scalar_subquery())).one()
        return cls(number, last[0] or 0, last[1] or 0)


@dataclass
class _Plan:
    """A slice decided: the rows to write, and what to check before writing them."""

    state: _State | None  # None: planned under the write lock
    fresh: list[tuple[FetchedMail, d.Reading]]
    rows: _Rows
    tickets: dict[str, int | None]
    outcomes: list[Outcome]
    first_number: int
    last_number: int


def service_level_words(out: d.OutgoingMail, language: str) -> dict:
    """What the acknowledgement says of the severity and the deadline, in one language."""
    label = out.severity and (out.severity.get(language) or next(iter(out.severity.values())))
    due = out.deadline
    return {"severity": label, "deadline": due and long_moment(due.local_due, language),
            "response_time": due and duration(due.target, language)}


class Store:
    def __init__(self, engine: Engine, clock: Clock, templates: Templates, sender: Sender,
                 reference_prefix: str = "SUP") -> None:
        self.engine = engine
        self.clock = clock
        self.templates = templates
        self.sender = sender
        self.reference_prefix = reference_prefix

    # -- reading mail -------------------------------------------------------------------

    def record_batch(self, folder: str, uidvalidity: int, mails: list[FetchedMail],
                     policy: d.Policy, readings: list[d.Reading] | None = None) -> list[Outcome]:
        """Decide and apply a batch of mails in one transaction.

        The decisions (and the mails they queue, rendered) are planned first, from a snapshot
        that holds no lock; the write transaction then only checks that nothing was written
        meanwhile (see _State) and inserts the rows, so delivery, which records each mail it
        sends, seldom waits for the write lock. Should anything have been written, the slice
        is decided again under the lock.

        The batch is written with one statement per table. Should that fail, each mail is
        recorded again in a savepoint of its own, and a mail that still fails is quarantined
        with the reason, so the others commit: this is the one guarded place per message.
        Safe to call twice for the same mails. Database outages propagate: nothing commits
        and the caller marks nothing. `readings`: the mails already read (d.read), if the
        caller read them ahead.
        """
        if readings is None:  # pure and the slowest part: before the lock
            readings = [d.read(mail.raw) for mail in mails]
        plan = self._plan_ahead(folder, uidvalidity, mails, readings, policy)
        with Session(self.engine) as session:
            db = session.connection()
            planned = plan is not None and _State.read(db) == plan.state
            if planned:
                fresh = plan.fresh
            else:
                fresh = self._unrecorded(db, folder, uidvalidity, mails, readings)
            try:
                with session.begin_nested():
                    if planned:
                        recorded = self._write(db, plan)
                    else:
                        recorded = self._record(db, folder, uidvalidity, fresh, policy)
            except OperationalError:
                raise  # the database, not a mail: nothing commits, nothing is marked
            except Exception as error:  # noqa: BLE001 - find the mail that caused it
                log.info("%s: batch failed (%s: %s); recording mail by mail",
                         folder, type(error).__name__, error)
                recorded = [self._record_guarded(session, folder, uidvalidity, mail, reading, policy)
                            for mail, reading in fresh]
            self._note_last_uid(db, folder, max(mail.uid for mail in mails))
            session.commit()
        outcomes = dict(zip((mail.uid for mail, _ in fresh), recorded))
        return [outcomes.get(mail.uid, Outcome("known", "")) for mail in mails]

    def _plan_ahead(self, folder: str, uidvalidity: int, mails: list[FetchedMail],
                    readings: list[d.Reading], policy: d.Policy) -> _Plan | None:
        """The slice decided from a snapshot; None when that fails (record_batch then
        decides under the lock, mail by mail if need be, and finds the culprit)."""
        try:
            with snapshot(self.engine) as db:
                state = _State.read(db, lock=False)
                fresh = self._unrecorded(db, folder, uidvalidity, mails, readings)
                return self._plan(db, folder, uidvalidity, fresh, policy, state)
        except Exception as error:  # noqa: BLE001 - decided again under the lock
            log.debug("%s: planning failed (%s: %s)", folder, type(error).__name__, error)
            return None

    def record_mail(self, folder: str, uidvalidity: int, uid: int, raw: bytes,
                    received_at: datetime, policy: d.Policy) -> Outcome:
        """One mail, one transaction (for tests; the service records batches)."""
        return self.record_batch(folder, uidvalidity, [FetchedMail(uid, received_at, raw)], policy)[0]

    def _record_guarded(self, session: Session, folder: str, uidvalidity: int,
                        mail: FetchedMail, reading: d.Reading, policy: d.Policy) -> Outcome:
        db = session.connection()
        try:
            try:
                with session.begin_nested():
                    return self._record(db, folder, uidvalidity, [(mail, reading)], policy)[0]
            except IntegrityError:
                # Another instance committed the same Message-ID between our read and our
                # write; the second attempt sees it and records a duplicate.
                with session.begin_nested():
                    return self._record(db, folder, uidvalidity, [(mail, reading)], policy)[0]
        except OperationalError:
            raise
        except Exception as error:  # noqa: BLE001 - never lose a mail: quarantine it
            log.exception("%s UID %s quarantined", folder, mail.uid)
            with session.begin_nested():
                return self._quarantine(db, folder, uidvalidity, mail,
                                        f"processing failed: {type(error).__name__}: {error}")

    def _record(self, db: sa.Connection, folder: str, uidvalidity: int,
                mails: list[tuple[FetchedMail, d.Reading]], policy: d.Policy) -> list[Outcome]:
        """Decide each mail against what the database and the earlier mails say; write all."""
        return self._write(db, self._plan(db, folder, uidvalidity, mails, policy))

    def _plan(self, db: sa.Connection, folder: str, uidvalidity: int,
              mails: list[tuple[FetchedMail, d.Reading]], policy: d.Policy,
              state: _State | None = None) -> _Plan:
        """Decide each mail against what the database and the earlier mails say."""
        rows, outcomes = _Rows(), []
        if not mails:
            return _Plan(state, mails, rows, {}, outcomes, 0, 0)
        # The counter first: under the write lock, later reads see what others committed.
        first = number = state.ticket_number if state else self._ticket_number(db)
        since = min(mail.internaldate for mail, _ in mails) - d.RATE_WINDOW
        view = SliceView.load(db, [reading for _, reading in mails], since, policy)
        for mail, reading in mails:
            decision = d.decide(reading, mail.internaldate, view, policy)
            original = view.originals.get(decision.message_key)
            if original:
                outcomes.append(self._note_duplicate(rows, original, decision, folder, uidvalidity, mail.uid))
                continue
            reference = decision.ticket_reference
            if decision.kind == d.NEW_TICKET:
                number += 1
                reference = f"{self.reference_prefix}-{number:06d}"
            outcomes.append(self._apply(rows, view, decision, reference, folder, uidvalidity, mail))
        return _Plan(state, mails, rows, view.tickets, outcomes, first, number)

    @staticmethod
    def _write(db: sa.Connection, plan: _Plan) -> list[Outcome]:
        plan.rows.write(db, plan.tickets)
        if plan.last_number != plan.first_number:
            db.execute(sa.update(COUNTERS).where(COUNTERS.c.name == "ticket").values(value=plan.last_number))
        return plan.outcomes

    def _ticket_number(self, db: sa.Connection) -> int:
        """The last ticket number; the row stays locked until commit (PostgreSQL FOR UPDATE,
        SQLite's write lock), so two instances never hand out the same one."""
        return db.execute(sa.select(COUNTERS.c.value).where(COUNTERS.c.name == "ticket")
                          .with_for_update()).scalar_one()

    def _quarantine(self, db: sa.Connection, folder: str, uidvalidity: int, mail: FetchedMail,
                    reason: str) -> Outcome:
        """Record a mail that could not be processed, with the reason, so it is never lost."""
        rows = _Rows()
        digest = hashlib.sha256(mail.raw).hexdigest()
        message = self._message(rows, f"quarantine:{folder}:{uidvalidity}:{mail.uid}:{digest}", None,
                                folder, uidvalidity, mail, d.QUARANTINED, None, "", digest, reason, None)
        rows.event(None, message, self.clock.now(), "quarantined", reason)
        rows.write(db, {})
        return Outcome("stored", d.QUARANTINED)

    @staticmethod
    def _unrecorded(db: sa.Connection, folder: str, uidvalidity: int, mails: list[FetchedMail],
                    readings: list[d.Reading]) -> list[tuple[FetchedMail, d.Reading]]:
        """The mails (with their readings) not yet recorded under this folder and UIDVALIDITY."""
        known = set(db.execute(sa.select(MESSAGES.c.uid).where(
            MESSAGES.c.folder == folder, MESSAGES.c.uidvalidity == uidvalidity,
            MESSAGES.c.uid.in_([mail.uid for mail in mails]))).scalars())
        return [(mail, reading) for mail, reading in zip(mails, readings) if mail.uid not in known]

    def note_uidvalidity(self, folder: str, uidvalidity: int) -> int | None:
        """Remember the folder's UIDVALIDITY; return the previous one when it changed."""
        with Session(self.engine) as session:
            state = session.get(MailboxState, folder)
            previous = state.uidvalidity if state else None
            if state is None:
                state = MailboxState(folder=folder, uidvalidity=uidvalidity, updated_at=self.clock.now())
            elif state.uidvalidity != uidvalidity:
                session.add(Event(at=self.clock.now(), kind="uidvalidity_changed",
                                  detail=f"{folder}: UIDVALIDITY {state.uidvalidity} -> {uidvalidity}; "
                                         "mails will be re-read and recognised by Message-ID"))
                state.uidvalidity, state.last_uid, state.updated_at = uidvalidity, 0, self.clock.now()
            session.add(state)
            session.commit()
        return previous if previous not in (None, uidvalidity) else None

    def _note_last_uid(self, db: sa.Connection, folder: str, uid: int) -> None:
        """Progress for the operator, in the batch's own transaction."""
        state = MailboxState.__table__
        db.execute(sa.update(state).where(state.c.folder == folder, state.c.last_uid < uid)
                   .values(last_uid=uid, updated_at=self.clock.now()))

    # -- applying a decision ------------------------------------------------------------

    def _apply(self, rows: _Rows, view: SliceView, decision: d.Decision, reference: str | None,
               folder: str, uidvalidity: int, fetched: FetchedMail) -> Outcome:
        mail, now = decision.mail, self.clock.now()
        if decision.kind == d.NEW_TICKET:
            rows.tickets.append(dict(
                reference=reference, requester=mail.from_addr, requester_name=mail.from_name[:200],
                subject=mail.subject[:998], language=decision.language, status=decision.status,
                customer_id=decision.customer_id, contract_id=decision.contract_id,
                flags=",".join(decision.flags)[:400],
                severity=decision.severity and decision.severity.level,
                severity_source=decision.severity.source if decision.severity else "",
                deadline_at=decision.deadline and decision.deadline.due_at,
                warn_at=decision.deadline and decision.deadline.warn_at,
                received_at=decision.received_at))
            view.tickets[reference] = None
            rows.event(reference, None, now, "ticket_created",
                       f"{reference} for {mail.from_addr}, received {decision.received_at.isoformat()}")
        message = self._message(
            rows, decision.message_key, mail.message_id if mail else None, folder, uidvalidity, fetched,
            decision.kind, mail.from_addr if mail else None, mail.subject if mail else "",
            decision.raw_sha256, "; ".join(decision.reasons), reference)
        view.originals[decision.message_key] = message
        if mail and mail.message_id and reference:
            view.thread.setdefault(mail.message_id, reference)
        rows.event(reference, message, now, decision.kind,
                   json.dumps({"reasons": decision.reasons, "folder": folder, "uid": fetched.uid,
                               "uidvalidity": uidvalidity}))
        for out in decision.outgoing:
            self._queue(rows, out, reference, decision)
            view.automatic.setdefault(out.recipient, []).append(now)
        return Outcome("stored", decision.kind, reference, len(decision.outgoing))

    def _queue(self, rows: _Rows, out: d.OutgoingMail, reference: str | None, decision: d.Decision) -> None:
        message_id = stable_message_id(out.purpose, reference or "", decision.message_key,
                                       self.sender.message_id_domain)
        ticket = {"reference": reference} if reference else None
        context = {"ticket": ticket, "original_subject": out.subject,
                   "recipient_name": out.recipient_name, "from_name": self.sender.name,
                   "requester": decision.mail.from_addr if decision.mail else "",
                   "customer_name": out.customer_name}
        rendered = self.templates.render_in(out.template, out.language.split("+"), lambda language: dict(
            context, reasons=[r.text(language) if isinstance(r, Reason) else r for r in out.reasons],
            exclusions=[e.get(language) or next(iter(e.values())) for e in out.exclusions],
            **service_level_words(out, language)))
        now = self.clock.now()
        raw = compose(rendered, sender=self.sender.address, sender_name=self.sender.name,
                      recipient=out.recipient, recipient_name=out.recipient_name,
                      message_id=message_id, date=now, in_reply_to=out.in_reply_to,
                      references=out.references, ticket_reference=reference)
        rows.outbox.append((reference, dict(
            message_id=message_id, purpose=out.purpose, recipient=out.recipient, raw=raw,
            created_at=now, status="pending", attempts=0, next_attempt_at=now, last_error="")))
        rows.event(reference, None, now, "mail_queued",
                   f"{out.purpose} ({out.language}) to {out.recipient}, {message_id}")

    def _note_duplicate(self, rows: _Rows, original: dict, decision: d.Decision,
                        folder: str, uidvalidity: int, uid: int) -> Outcome:
        rows.event(original["reference"], original, self.clock.now(), "duplicate",
                   f"{folder} UID {uid} (UIDVALIDITY {uidvalidity}) repeats {decision.message_key}, "
                   f"first read as {original['folder']} UID {original['uid']}; ignored")
        return Outcome("duplicate", original["kind"])

    def _message(self, rows: _Rows, key: str, message_id: str | None, folder: str, uidvalidity: int,
                 fetched: FetchedMail, kind: str, sender: str | None, subject: str, digest: str,
                 reason: str, reference: str | None) -> dict:
        message = dict(
            message_key=key, message_id=message_id, folder=folder, uidvalidity=uidvalidity,
            uid=fetched.uid, direction="in", kind=kind, sender=sender, subject=subject[:998],
            raw_sha256=digest, size=len(fetched.raw), received_at=fetched.internaldate,
            processed_at=self.clock.now(), reason=reason[:2000], reference=reference)
        rows.messages.append(message)
        return message
