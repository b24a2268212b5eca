"""The ticket store: the only writer. Applies a Decision in one transaction.

A mail's row, its ticket, its audit events and the mails it causes (outbox) commit together
or not at all; the mailbox is marked only after that commit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot import decide as d
from bot.clock import Clock
from bot.compose import compose, stable_message_id
from bot.models import Counter, Event, MailboxState, Message, OutboxMail, Ticket
from bot.templating import Templates


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
    """The read-only view of tickets that the pure decision gets."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def ticket_for_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        for model in (Message, OutboxMail):
            row = self._session.exec(
                select(Ticket.reference).join(model, model.ticket_id == Ticket.id)
                .where(model.message_id.in_(message_ids)).limit(1)).first()
            if row:
                return row
        return None

    def ticket_exists(self, reference: str) -> bool:
        return self._session.exec(select(Ticket.id).where(Ticket.reference == reference)).first() is not None

    def automatic_mails_to(self, address: str, since: datetime) -> int:
        return self._session.exec(
            select(sa.func.count()).select_from(OutboxMail)
            .where(OutboxMail.recipient == address, OutboxMail.created_at >= since)).one()


class Store:
    def __init__(self, engine: Engine, clock: Clock, templates: Templates, sender: Sender,
                 reference_prefix: str = "SUP") -> None:
        self.engine = engine
        self.clock = clock
        self.templates = templates
        self.sender = sender
        self.reference_prefix = reference_prefix

    # -- reading mail -------------------------------------------------------------------

    def is_recorded(self, folder: str, uidvalidity: int, uid: int) -> bool:
        with Session(self.engine) as session:
            return session.exec(select(Message.id).where(
                Message.folder == folder, Message.uidvalidity == uidvalidity,
                Message.uid == uid)).first() is not None

    def record_mail(self, folder: str, uidvalidity: int, uid: int, raw: bytes,
                    received_at: datetime, policy: d.Policy) -> Outcome:
        """Decide and apply, in one transaction. Safe to call twice for the same mail."""
        try:
            return self._record_once(folder, uidvalidity, uid, raw, received_at, policy)
        except IntegrityError:
            # Another instance committed the same Message-ID between our read and our write;
            # the second attempt sees it and records a duplicate.
            return self._record_once(folder, uidvalidity, uid, raw, received_at, policy)

    def _record_once(self, folder: str, uidvalidity: int, uid: int, raw: bytes,
                     received_at: datetime, policy: d.Policy) -> Outcome:
        with Session(self.engine) as session:
            decision = d.decide(raw, received_at, SessionView(session), policy)
            original = session.exec(select(Message).where(Message.message_key == decision.message_key)).first()
            if original:
                outcome = self._note_duplicate(session, original, decision, folder, uidvalidity, uid)
            else:
                outcome = self._apply(session, decision, folder, uidvalidity, uid, len(raw))
            session.commit()
            return outcome

    def quarantine(self, folder: str, uidvalidity: int, uid: int, raw: bytes,
                   received_at: datetime, reason: str) -> Outcome:
        """Record a mail that could not be processed, with the reason, so it is never lost."""
        digest = hashlib.sha256(raw).hexdigest()
        key = f"quarantine:{folder}:{uidvalidity}:{uid}:{digest}"
        with Session(self.engine) as session:
            if session.exec(select(Message.id).where(Message.message_key == key)).first():
                return Outcome("known", d.QUARANTINED)
            message = self._message_row(key, None, folder, uidvalidity, uid, d.QUARANTINED,
                                        None, "", digest, len(raw), received_at, reason)
            session.add(message)
            session.flush()
            self._event(session, None, message.id, "quarantined", reason)
            session.commit()
        return Outcome("stored", d.QUARANTINED)

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

    def note_last_uid(self, folder: str, uid: int) -> None:
        with Session(self.engine) as session:
            session.exec(sa.update(MailboxState).where(MailboxState.folder == folder,
                                                       MailboxState.last_uid < uid)
                         .values(last_uid=uid, updated_at=self.clock.now()))
            session.commit()

    # -- applying a decision ------------------------------------------------------------

    def _apply(self, session: Session, decision: d.Decision, folder: str, uidvalidity: int,
               uid: int, size: int) -> Outcome:
        ticket = self._ticket_for(session, decision)
        mail = decision.mail
        message = self._message_row(
            decision.message_key, mail.message_id if mail else None, folder, uidvalidity, uid,
            decision.kind, mail.from_addr if mail else None, mail.subject if mail else "",
            decision.raw_sha256, size, decision.received_at, "; ".join(decision.reasons),
            ticket.id if ticket else None)
        session.add(message)
        session.flush()
        self._event(session, ticket and ticket.id, message.id, decision.kind,
                    json.dumps({"reasons": decision.reasons, "folder": folder, "uid": uid,
                                "uidvalidity": uidvalidity}))
        queued = [self._queue(session, out, ticket, decision) for out in decision.outgoing]
        return Outcome("stored", decision.kind, ticket and ticket.reference, len(queued))

    def _ticket_for(self, session: Session, decision: d.Decision) -> Ticket | None:
        if decision.kind == d.NEW_TICKET:
            mail = decision.mail
            ticket = Ticket(reference=self._next_reference(session), requester=mail.from_addr,
                            requester_name=mail.from_name, subject=mail.subject,
                            language=decision.language, received_at=decision.received_at)
            session.add(ticket)
            session.flush()
            self._event(session, ticket.id, None, "ticket_created",
                        f"{ticket.reference} for {ticket.requester}, received "
                        f"{decision.received_at.isoformat()}")
            return ticket
        if decision.ticket_reference:
            return session.exec(select(Ticket).where(Ticket.reference == decision.ticket_reference)).one()
        return None

    def _next_reference(self, session: Session) -> str:
        """Ticket numbers from a counter row: the UPDATE's row lock serialises instances."""
        value = session.execute(sa.update(Counter).where(Counter.name == "ticket")
                                .values(value=Counter.value + 1).returning(Counter.value)).scalar_one()
        return f"{self.reference_prefix}-{value:06d}"

    def _queue(self, session: Session, out: d.OutgoingMail, ticket: Ticket | None,
               decision: d.Decision) -> OutboxMail:
        reference = ticket.reference if ticket else ""
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
        row = OutboxMail(message_id=message_id, ticket_id=ticket and ticket.id, purpose=out.purpose,
                         recipient=out.recipient, raw=raw, created_at=now, next_attempt_at=now)
        session.add(row)
        self._event(session, ticket and ticket.id, None, "mail_queued",
                    f"{out.purpose} ({out.language}) to {out.recipient}, {message_id}")
        return row

    def _note_duplicate(self, session: Session, original: Message, decision: d.Decision,
                        folder: str, uidvalidity: int, uid: int) -> Outcome:
        self._event(session, original.ticket_id, original.id, "duplicate",
                    f"{folder} UID {uid} (UIDVALIDITY {uidvalidity}) repeats {decision.message_key}, "
                    f"first read as {original.folder} UID {original.uid}; ignored")
        return Outcome("duplicate", original.kind)

    def _message_row(self, key, message_id, folder, uidvalidity, uid, kind, sender, subject,
                     digest, size, received_at, reason, ticket_id=None) -> Message:
        return Message(message_key=key, message_id=message_id, folder=folder, uidvalidity=uidvalidity,
                       uid=uid, kind=kind, sender=sender, subject=subject[:998], raw_sha256=digest,
                       size=size, received_at=received_at, processed_at=self.clock.now(),
                       ticket_id=ticket_id, reason=reason[:2000])

    def _event(self, session: Session, ticket_id, message_id, kind: str, detail: str) -> None:
        session.add(Event(at=self.clock.now(), ticket_id=ticket_id, message_id=message_id,
                          kind=kind, detail=detail))
