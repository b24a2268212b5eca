"""Deliver queued mail: claim a row, send it, record the result; retry with back-off.

A row is claimed (status `sending`, with a lease) and committed before it is sent, so two
instances never send the same row. A claim whose lease ran out without a result means the
sender died mid-send: the mail may or may not have left, so it becomes `uncertain` and is
not resent on its own (a duplicate acknowledgement is worse than asking the operator).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bot.clock import Clock
from bot.models import Event, OutboxMail, Ticket
from bot.transport import Channel, PermanentFailure, TemporaryFailure, Transport

log = logging.getLogger(__name__)

# Automatic answers go out with a null envelope sender so that bounces never loop (RFC 3834 §3.3).
AUTOMATIC_PURPOSES = frozenset({"ack"})


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
                 redirect_all_to: str | None = None, batch_size: int = 50) -> None:
        self.engine, self.clock, self.transport = engine, clock, transport
        self.sender_address = sender_address
        self.instance, self.retry, self.redirect_all_to = instance, retry, redirect_all_to
        self.batch_size = batch_size

    async def deliver_due(self) -> DeliveryReport:
        """Send what is due now, over one connection."""
        report = DeliveryReport(uncertain=self._expire_claims())
        if not self._anything_due():
            return report
        try:
            async with self.transport.open() as channel:
                await self._deliver_batch(channel, report)
        except TemporaryFailure as error:
            log.warning("outbox: %s", error)
            report.retrying += self._postpone_due(str(error))
        return report

    async def _deliver_batch(self, channel: Channel, report: DeliveryReport) -> None:
        for _ in range(self.batch_size):
            row = self._claim_next()
            if row is None:
                return
            try:
                await channel.send(self._envelope_from(row), self._recipients(row), row.raw)
            except PermanentFailure as error:
                self._finish(row, "failed", str(error))
                report.failed += 1
            except TemporaryFailure as error:
                report.retrying += self._release(row, str(error))
                raise
            else:
                self._finish(row, "sent")
                report.sent += 1

    def _envelope_from(self, row: OutboxMail) -> str:
        return "" if row.purpose in AUTOMATIC_PURPOSES else self.sender_address

    def _recipients(self, row: OutboxMail) -> list[str]:
        return [self.redirect_all_to or row.recipient]

    # -- state changes, each its own short transaction ----------------------------------

    def _anything_due(self) -> bool:
        with Session(self.engine) as session:
            return session.exec(self._due().limit(1)).first() is not None

    def _due(self):
        return select(OutboxMail.id).where(OutboxMail.status == "pending",
                                           OutboxMail.next_attempt_at <= self.clock.now())

    def _claim_next(self) -> OutboxMail | None:
        """Take one due row for this instance; the conditional UPDATE makes the claim atomic
        on SQLite and PostgreSQL alike."""
        now = self.clock.now()
        with Session(self.engine) as session:
            for row_id in session.exec(self._due().order_by(OutboxMail.id).limit(10)).all():
                claimed = session.exec(sa.update(OutboxMail).where(
                    OutboxMail.id == row_id, OutboxMail.status == "pending").values(
                    status="sending", claimed_by=self.instance,
                    claimed_until=now + timedelta(seconds=self.retry.lease_seconds)))
                if claimed.rowcount == 1:
                    session.commit()
                    return session.get(OutboxMail, row_id)
        return None

    def _finish(self, row: OutboxMail, status: str, error: str = "") -> None:
        now = self.clock.now()
        with Session(self.engine) as session:
            session.exec(sa.update(OutboxMail).where(OutboxMail.id == row.id).values(
                status=status, attempts=OutboxMail.attempts + 1, last_error=error[:2000],
                sent_at=now if status == "sent" else None, claimed_until=None))
            if status == "sent" and row.purpose == "ack" and row.ticket_id:
                session.exec(sa.update(Ticket).where(Ticket.id == row.ticket_id,
                                                     Ticket.acknowledged_at.is_(None))
                             .values(acknowledged_at=now))
            detail = f"{row.purpose} to {row.recipient}, {row.message_id}" + (f": {error}" if error else "")
            session.add(Event(at=now, ticket_id=row.ticket_id, kind=f"mail_{status}", detail=detail))
            session.commit()

    def _release(self, row: OutboxMail, error: str) -> int:
        """A temporary failure: back to pending with back-off, or failed after max attempts."""
        with Session(self.engine) as session:
            fresh = session.get(OutboxMail, row.id)
            self._back_off(session, fresh, error)
            session.commit()
        return 1

    def _postpone_due(self, error: str) -> int:
        """The server is unreachable: every due row waits its back-off before the next try."""
        with Session(self.engine) as session:
            rows = session.exec(select(OutboxMail).where(
                OutboxMail.id.in_(self._due().limit(self.batch_size)))).all()
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
        now = self.clock.now()
        with Session(self.engine) as session:
            stale = session.exec(select(OutboxMail).where(
                OutboxMail.status == "sending", OutboxMail.claimed_until < now)).all()
            for row in stale:
                row.status = "uncertain"
                session.add(row)
                session.add(Event(at=now, ticket_id=row.ticket_id, kind="mail_uncertain",
                                  detail=f"{row.purpose} to {row.recipient}, {row.message_id}: "
                                         f"{row.claimed_by} stopped while sending; not resent "
                                         f"automatically (supportbot outbox retry {row.id})"))
            session.commit()
            return len(stale)


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
