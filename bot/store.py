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

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select

from bot import decide as d
from bot.clock import Clock
from bot.compose import compose, stable_message_id
from bot.mailbox import FetchedMail
from bot.models import Counter, Event, MailboxState, Message, OutboxMail, Ticket
from bot.templating import Templates

log = logging.getLogger(__name__)

TICKETS, MESSAGES, EVENTS, OUTBOX = (m.__table__ for m in (Ticket, Message, Event, OutboxMail))


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


class SessionView:
    """The read-only view of tickets that the pure decision gets (Core queries: hot path)."""

    def __init__(self, session: Session) -> None:
        self._db = session.connection()

    def ticket_for_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        for table in (MESSAGES, OUTBOX):
            row = self._db.execute(
                sa.select(TICKETS.c.reference).join(table, table.c.ticket_id == TICKETS.c.id)
                .where(table.c.message_id.in_(message_ids)).limit(1)).first()
            if row:
                return row.reference
        return None

    def ticket_exists(self, reference: str) -> bool:
        return self._db.execute(sa.select(TICKETS.c.id).where(TICKETS.c.reference == reference)).first() is not None

    def automatic_mails_to(self, address: str, since: datetime) -> int:
        return self._db.execute(sa.select(sa.func.count()).select_from(OUTBOX).where(
            OUTBOX.c.recipient == address, OUTBOX.c.created_at >= since)).scalar_one()


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
                     policy: d.Policy) -> list[Outcome]:
        """Decide and apply a batch of mails in one transaction, a savepoint per mail.

        A mail whose processing fails is quarantined with the reason inside its own
        savepoint, so the others still commit: this is the one guarded place per message.
        Safe to call twice for the same mails. Database outages propagate: nothing commits
        and the caller marks nothing.
        """
        with Session(self.engine) as session:
            known = self._recorded_uids(session, folder, uidvalidity, [m.uid for m in mails])
            outcomes = [Outcome("known", "") if mail.uid in known
                        else self._record_guarded(session, folder, uidvalidity, mail, policy)
                        for mail in mails]
            self._note_last_uid(session, folder, max(mail.uid for mail in mails))
            session.commit()
        return outcomes

    def record_mail(self, folder: str, uidvalidity: int, uid: int, raw: bytes,
                    received_at: datetime, policy: d.Policy) -> Outcome:
        """One mail, one transaction (for tests; the service records batches)."""
        return self.record_batch(folder, uidvalidity, [FetchedMail(uid, received_at, raw)], policy)[0]

    def _record_guarded(self, session: Session, folder: str, uidvalidity: int,
                        mail: FetchedMail, policy: d.Policy) -> Outcome:
        try:
            try:
                with session.begin_nested():
                    return self._record(session, folder, uidvalidity, mail, policy)
            except IntegrityError:
                # Another instance committed the same Message-ID between our read and our
                # write; the second attempt sees it and records a duplicate.
                with session.begin_nested():
                    return self._record(session, folder, uidvalidity, mail, policy)
        except OperationalError:
            raise  # the database, not this mail: nothing commits, nothing is marked
        except Exception as error:  # noqa: BLE001 - never lose a mail: quarantine it
            log.exception("%s UID %s quarantined", folder, mail.uid)
            with session.begin_nested():
                return self._quarantine(session, folder, uidvalidity, mail,
                                        f"processing failed: {type(error).__name__}: {error}")

    def _record(self, session: Session, folder: str, uidvalidity: int, mail: FetchedMail,
                policy: d.Policy) -> Outcome:
        decision = d.decide(mail.raw, mail.internaldate, SessionView(session), policy)
        original = session.connection().execute(sa.select(MESSAGES).where(
            MESSAGES.c.message_key == decision.message_key)).first()
        if original:
            return self._note_duplicate(session, original, decision, folder, uidvalidity, mail.uid)
        return self._apply(session, decision, folder, uidvalidity, mail.uid, len(mail.raw))

    def _quarantine(self, session: Session, folder: str, uidvalidity: int, mail: FetchedMail,
                    reason: str) -> Outcome:
        """Record a mail that could not be processed, with the reason, so it is never lost."""
        digest = hashlib.sha256(mail.raw).hexdigest()
        key = f"quarantine:{folder}:{uidvalidity}:{mail.uid}:{digest}"
        message_id = self._insert_message(session, key, None, folder, uidvalidity, mail.uid, d.QUARANTINED,
                                          None, "", digest, len(mail.raw), mail.internaldate, reason)
        self._event(session, None, message_id, "quarantined", reason)
        return Outcome("stored", d.QUARANTINED)

    @staticmethod
    def _recorded_uids(session: Session, folder: str, uidvalidity: int, uids: list[int]) -> set[int]:
        return set(session.exec(select(Message.uid).where(
            Message.folder == folder, Message.uidvalidity == uidvalidity, Message.uid.in_(uids))).all())

    def note_uidvalidity(self, folder: str, uidvalidity: int) -> int | None:
        """Remember the folder's UIDVALIDITY; return the previous one when it changed."""
        with Session(self.engine) as session:
            state = session.get(MailboxState, folder)
            previous = state.uidvalidity if state else None
            if state is None:
                state = MailboxState(folder=folder, uidvalidity=uidvalidity, updated_at=self.clock.now())
            elif state.uidvalidity != uidvalidity:
                self._event(session, None, None, "uidvalidity_changed",
                            f"{folder}: UIDVALIDITY {state.uidvalidity} -> {uidvalidity}; "
                            "mails will be re-read and recognised by Message-ID")
                state.uidvalidity, state.last_uid, state.updated_at = uidvalidity, 0, self.clock.now()
            session.add(state)
            session.commit()
        return previous if previous not in (None, uidvalidity) else None

    def _note_last_uid(self, session: Session, folder: str, uid: int) -> None:
        """Progress for the operator, in the batch's own transaction."""
        state = MailboxState.__table__
        session.connection().execute(sa.update(state).where(state.c.folder == folder, state.c.last_uid < uid)
                                     .values(last_uid=uid, updated_at=self.clock.now()))

    # -- applying a decision ------------------------------------------------------------

    def _apply(self, session: Session, decision: d.Decision, folder: str, uidvalidity: int,
               uid: int, size: int) -> Outcome:
        ticket = self._ticket_for(session, decision)
        ticket_id = ticket["id"] if ticket else None
        mail = decision.mail
        message_id = self._insert_message(
            session, decision.message_key, mail.message_id if mail else None, folder, uidvalidity, uid,
            decision.kind, mail.from_addr if mail else None, mail.subject if mail else "",
            decision.raw_sha256, size, decision.received_at, "; ".join(decision.reasons), ticket_id)
        self._event(session, ticket_id, message_id, decision.kind,
                    json.dumps({"reasons": decision.reasons, "folder": folder, "uid": uid,
                                "uidvalidity": uidvalidity}))
        for out in decision.outgoing:
            self._queue(session, out, ticket, decision)
        return Outcome("stored", decision.kind, ticket and ticket["reference"], len(decision.outgoing))

    def _ticket_for(self, session: Session, decision: d.Decision) -> dict | None:
        db = session.connection()
        if decision.kind == d.NEW_TICKET:
            mail = decision.mail
            reference = self._next_reference(session)
            ticket_id = db.execute(sa.insert(TICKETS).returning(TICKETS.c.id), dict(
                reference=reference, requester=mail.from_addr, requester_name=mail.from_name[:200],
                subject=mail.subject[:998], language=decision.language, status="open",
                received_at=decision.received_at)).scalar_one()
            self._event(session, ticket_id, None, "ticket_created",
                        f"{reference} for {mail.from_addr}, received {decision.received_at.isoformat()}")
            return {"id": ticket_id, "reference": reference}
        if decision.ticket_reference:
            row = db.execute(sa.select(TICKETS.c.id, TICKETS.c.reference).where(
                TICKETS.c.reference == decision.ticket_reference)).one()
            return {"id": row.id, "reference": row.reference}
        return None

    def _next_reference(self, session: Session) -> str:
        """Ticket numbers from a counter row: the UPDATE's row lock serialises instances."""
        counters = Counter.__table__
        value = session.connection().execute(
            sa.update(counters).where(counters.c.name == "ticket")
            .values(value=counters.c.value + 1).returning(counters.c.value)).scalar_one()
        return f"{self.reference_prefix}-{value:06d}"

    def _queue(self, session: Session, out: d.OutgoingMail, ticket: dict | None,
               decision: d.Decision) -> None:
        reference = ticket["reference"] if ticket else ""
        message_id = stable_message_id(out.purpose, reference, decision.message_key,
                                       self.sender.message_id_domain)
        context = {"ticket": ticket, "original_subject": out.subject,
                   "recipient_name": out.recipient_name, "from_name": self.sender.name}
        rendered = self.templates.render(out.template, out.language, context)
        now = self.clock.now()
        raw = compose(rendered, sender=self.sender.address, sender_name=self.sender.name,
                      recipient=out.recipient, recipient_name=out.recipient_name,
                      message_id=message_id, date=now, in_reply_to=out.in_reply_to,
                      references=out.references, ticket_reference=reference or None)
        ticket_id = ticket["id"] if ticket else None
        session.connection().execute(sa.insert(OUTBOX), dict(
            message_id=message_id, ticket_id=ticket_id, purpose=out.purpose, recipient=out.recipient,
            raw=raw, created_at=now, status="pending", attempts=0, next_attempt_at=now, last_error=""))
        self._event(session, ticket_id, None, "mail_queued",
                    f"{out.purpose} ({out.language}) to {out.recipient}, {message_id}")

    def _note_duplicate(self, session: Session, original, decision: d.Decision,
                        folder: str, uidvalidity: int, uid: int) -> Outcome:
        self._event(session, original.ticket_id, original.id, "duplicate",
                    f"{folder} UID {uid} (UIDVALIDITY {uidvalidity}) repeats {decision.message_key}, "
                    f"first read as {original.folder} UID {original.uid}; ignored")
        return Outcome("duplicate", original.kind)

    def _insert_message(self, session: Session, key, message_id, folder, uidvalidity, uid, kind, sender,
                        subject, digest, size, received_at, reason, ticket_id=None) -> int:
        return session.connection().execute(sa.insert(MESSAGES).returning(MESSAGES.c.id), dict(
            message_key=key, message_id=message_id, folder=folder, uidvalidity=uidvalidity, uid=uid,
            direction="in", kind=kind, sender=sender, subject=subject[:998], raw_sha256=digest,
            size=size, received_at=received_at, processed_at=self.clock.now(), ticket_id=ticket_id,
            reason=reason[:2000])).scalar_one()

    def _event(self, session: Session, ticket_id, message_id, kind: str, detail: str) -> None:
        session.connection().execute(sa.insert(EVENTS), dict(
            at=self.clock.now(), ticket_id=ticket_id, message_id=message_id, kind=kind, detail=detail))
