"""Deliver queued mail: claim a batch, send it in order, record each result; back off.

A batch is claimed (status `sending`, a token, a lease) and committed before anything is
sent, so two instances never send the same row. Rows are sent in id order and each result
is committed as soon as the server answers. So when a sender dies, its claim holds at most
one mail whose fate is unknown, the lowest id still `sending`: that one becomes `uncertain`
and is not resent on its own (a duplicate acknowledgement is worse than asking the
operator); the rest of the claim was never tried and goes back to `pending`.

A backlog goes out over up to `connections` SMTP connections at once, each with claims of
its own: a mail costs about four round trips to the server, and one connection waiting for
each answer in turn would bound delivery by the server's latency, not by its speed. A
sender that dies therefore leaves at most one uncertain mail per connection.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bot.clock import Clock
from bot.database import snapshot
from bot.models import Event, OutboxMail, Ticket
from bot.transport import Channel, ConnectionLost, PermanentFailure, TemporaryFailure, Transport

log = logging.getLogger(__name__)

OUTBOX, TICKETS, EVENTS = OutboxMail.__table__, Ticket.__table__, Event.__table__

_RECORD_RESULT = sa.update(OUTBOX).where(OUTBOX.c.id == sa.bindparam("row_id")).values(
    status=sa.bindparam("result"), attempts=OUTBOX.c.attempts + 1, last_error=sa.bindparam("error"),
    sent_at=sa.bindparam("sent"), claimed_until=None)
_NOTE_ACKNOWLEDGED = sa.update(TICKETS).where(
    TICKETS.c.id == sa.bindparam("ticket"), TICKETS.c.acknowledged_at.is_(None)).values(
    acknowledged_at=sa.bindparam("at"))
_RECORD_EVENT = sa.insert(EVENTS)

# Automatic answers go out with a null envelope sender so that bounces never loop (RFC 3834 §3.3).
AUTOMATIC_PURPOSES = frozenset({"ack", "refusal", "unknown_sender"})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 12
    base_seconds: float = 30
    max_seconds: float = 3600
    lease_seconds: float = 300

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.base_seconds * 2 ** max(attempts - 1, 0), self.max_seconds))


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    uncertain: int = 0


class Outbox:
    def __init__(self, engine: Engine, clock: Clock, transport: Transport, instance: str,
                 sender_address: str, retry: RetryPolicy = RetryPolicy(),
                 redirect_all_to: str | None = None, batch_size: int = 50, connections: int = 1) -> None:
        self.engine, self.clock, self.transport = engine, clock, transport
        self.sender_address = sender_address
        self.instance, self.retry, self.redirect_all_to = instance, retry, redirect_all_to
        self.batch_size, self.connections = batch_size, connections

    async def deliver_due(self) -> DeliveryReport:
        """Send everything that is due now, batch after batch, the due mails shared out
        between up to `connections` connections (only as many as have a batch to send)."""
        report = DeliveryReport(uncertain=self._expire_claims())
        due = self._count_due(self.batch_size * self.connections)
        if not due:
            return report
        share = min(self.batch_size, math.ceil(due / self.connections))
        outcomes = await asyncio.gather(*(self._deliver_batches(share, report) for _ in range(self.connections)),
                                        return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for failure in failures:
            if not isinstance(failure, TemporaryFailure):
                raise failure
        if failures:
            log.warning("outbox: %s", failures[0])
            report.retrying += self._postpone_due(str(failures[0]))
        return report

    async def _deliver_batches(self, size: int, report: DeliveryReport) -> None:
        """One connection's work: claim a batch, open the connection, send it, claim again
        until nothing is due."""
        rows = self._claim_batch(size)
        if not rows:
            return
        connected = False
        try:
            async with self.transport.open() as channel:
                connected = True
                with self.engine.connect() as db:  # one database connection for the results
                    while rows and await self._send_batch(channel, rows, db, report):
                        rows = self._claim_batch(size)
        except TemporaryFailure as error:
            if not connected:
                self._release(None, str(error), rows)  # never tried: due again, as they were
            raise

    async def _send_batch(self, channel: Channel, rows: list[OutboxMail], db: sa.Connection,
                          report: DeliveryReport) -> bool:
        """Send a claimed batch in id order; False when the claim was taken from us."""
        renew_at = self.clock.now() + self._lease / 2
        for position, row in enumerate(rows):
            if self.clock.now() >= renew_at:
                if not self._renew(row.claimed_by):
                    return False  # the claim was taken from us: send nothing more of it
                renew_at = self.clock.now() + self._lease / 2
            try:
                await channel.send(self._envelope_from(row), self._recipients(row), row.raw)
            except PermanentFailure as error:
                self._finish(db, row, "failed", str(error))
                report.failed += 1
            except ConnectionLost as error:
                self._release(row, str(error), rows[position + 1:])
                report.retrying += 1
                raise
            except TemporaryFailure as error:  # this mail only (4xx): the others go on
                self._release(row, str(error), [])
                report.retrying += 1
            else:
                self._finish(db, row, "sent")
                report.sent += 1
        return True

    def _envelope_from(self, row: OutboxMail) -> str:
        return "" if row.purpose in AUTOMATIC_PURPOSES else self.sender_address

    def _recipients(self, row: OutboxMail) -> list[str]:
        return [self.redirect_all_to or row.recipient]

    # -- state changes, each its own short transaction ----------------------------------

    def _count_due(self, at_most: int) -> int:
        """A read: it takes no write lock (the claims that follow do)."""
        with snapshot(self.engine) as db:
            return db.execute(sa.select(sa.func.count()).select_from(
                self._due().limit(at_most).subquery())).scalar_one()

    def _due(self):
        return select(OutboxMail.id).where(OutboxMail.status == "pending",
                                           OutboxMail.next_attempt_at <= self.clock.now())

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.retry.lease_seconds)

    def _claim_batch(self, size: int | None = None) -> list[OutboxMail]:
        """Take up to `size` (batch_size) due rows for this sender. The conditional UPDATE makes
        the claim atomic on SQLite and PostgreSQL alike; a token names the claim."""
        token = f"{self.instance}/{uuid.uuid4().hex[:12]}"
        lease = self.clock.now() + self._lease
        with Session(self.engine) as session:
            ids = session.exec(self._due().order_by(OutboxMail.id).limit(size or self.batch_size)).all()
            session.exec(sa.update(OutboxMail).where(OutboxMail.id.in_(ids), OutboxMail.status == "pending")
                         .values(status="sending", claimed_by=token, claimed_until=lease))
            session.commit()
            rows = session.exec(select(OutboxMail).where(OutboxMail.claimed_by == token,
                                                         OutboxMail.status == "sending")
                                .order_by(OutboxMail.id)).all()
        return list(rows)

    def _renew(self, token: str) -> bool:
        """Extend a claim's lease while its batch is still being sent (renewed at half the
        lease, so a send, bounded by the SMTP timeout, never outlives it). False when the
        claim has expired and been taken over meanwhile."""
        with self.engine.begin() as db:
            renewed = db.execute(sa.update(OUTBOX).where(
                OUTBOX.c.claimed_by == token, OUTBOX.c.status == "sending",
                OUTBOX.c.claimed_until >= self.clock.now()).values(
                claimed_until=self.clock.now() + self._lease))
        return renewed.rowcount > 0

    def _finish(self, db: sa.Connection, row: OutboxMail, status: str, error: str = "") -> None:
        """Record one result at once (prepared statements: this runs once per mail)."""
        now = self.clock.now()
        detail = f"{row.purpose} to {row.recipient}, {row.message_id}" + (f": {error}" if error else "")
        with db.begin():
            db.execute(_RECORD_RESULT, dict(row_id=row.id, result=status, error=error[:2000],
                                            sent=now if status == "sent" else None))
            if status == "sent" and row.purpose in AUTOMATIC_PURPOSES and row.ticket_id:
                db.execute(_NOTE_ACKNOWLEDGED, dict(ticket=row.ticket_id, at=now))
            db.execute(_RECORD_EVENT, dict(at=now, ticket_id=row.ticket_id, message_id=None,
                                           kind=f"mail_{status}", detail=detail))

    def _release(self, failed: OutboxMail | None, error: str, untried: list[OutboxMail]) -> None:
        """A temporary failure: the failed row backs off; the untried rest is pending again."""
        with Session(self.engine) as session:
            if failed is not None:
                self._back_off(session, session.get(OutboxMail, failed.id), error)
            session.exec(sa.update(OutboxMail).where(OutboxMail.id.in_([r.id for r in untried]))
                         .values(status="pending", claimed_by=None, claimed_until=None))
            session.commit()

    def _postpone_due(self, error: str) -> int:
        """The server is unreachable: the due rows this round would have sent wait their
        back-off before the next try."""
        with Session(self.engine) as session:
            rows = session.exec(select(OutboxMail).where(
                OutboxMail.id.in_(self._due().limit(self.batch_size * self.connections)))).all()
            for row in rows:
                self._back_off(session, row, error)
            session.commit()
            return len(rows)

    def _back_off(self, session: Session, row: OutboxMail, error: str) -> None:
        now = self.clock.now()
        row.attempts += 1
        row.last_error = error[:2000]
        row.claimed_by = row.claimed_until = None
        if row.attempts >= self.retry.max_attempts:
            row.status = "failed"
            session.add(Event(at=now, ticket_id=row.ticket_id, kind="mail_failed",
                              detail=f"{row.purpose} to {row.recipient} after {row.attempts} attempts: {error}"))
        else:
            row.status = "pending"
            row.next_attempt_at = now + self.retry.delay(row.attempts)
        session.add(row)

    def _expire_claims(self) -> int:
        """Claims whose lease ran out belong to a dead sender: only the first unfinished row
        of each may have left; it becomes uncertain, the others were never tried."""
        now = self.clock.now()
        with Session(self.engine) as session:
            stale = session.exec(select(OutboxMail).where(
                OutboxMail.status == "sending", OutboxMail.claimed_until < now)
                .order_by(OutboxMail.id)).all()
            in_flight = {}
            for row in stale:
                in_flight.setdefault(row.claimed_by, row)
            for row in stale:
                uncertain = in_flight[row.claimed_by] is row
                if uncertain:
                    session.add(Event(at=now, ticket_id=row.ticket_id, kind="mail_uncertain",
                                      detail=f"{row.purpose} to {row.recipient}, {row.message_id}: "
                                             f"{row.claimed_by} stopped while sending; not resent "
                                             f"automatically (supportbot outbox retry {row.id})"))
                row.status = "uncertain" if uncertain else "pending"
                row.claimed_by = row.claimed_until = None
                session.add(row)
            session.commit()
            return len(in_flight)


def retry_mail(engine: Engine, clock: Clock, row_id: int) -> OutboxMail | None:
    """Operator's decision to send an uncertain or failed mail again."""
    with Session(engine) as session:
        row = session.get(OutboxMail, row_id)
        if row is None or row.status not in ("uncertain", "failed"):
            return row
        row.status, row.next_attempt_at = "pending", clock.now()
        session.add(row)
        session.add(Event(at=clock.now(), ticket_id=row.ticket_id, kind="mail_retry",
                          detail=f"operator asked to resend {row.message_id}"))
        session.commit()
        session.refresh(row)
        return row
