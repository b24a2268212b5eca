"""Drain the inbox: fetch new mail, record each in its own transaction, then mark it.

This is the one guarded place per message (like Mailman's shunt queue): whatever goes wrong
with one mail, it is quarantined with the reason and the loop goes on to the next.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError, OperationalError

from bot import decide as d
from bot.mailbox import FetchedMail, Mailbox
from bot.store import Outcome, Store

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    read: int = 0
    queued: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.read += 1
        self.queued += outcome.queued
        key = outcome.kind if outcome.status == "stored" else outcome.status
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


class Ingestor:
    def __init__(self, store: Store, policy: d.Policy, folder: str, batch_size: int = 50) -> None:
        self.store, self.policy, self.folder, self.batch_size = store, policy, folder, batch_size

    def drain(self, mailbox: Mailbox, stop: threading.Event | None = None) -> IngestReport:
        """Read every pending mail once; mark each batch after its mails committed.

        `stop` is honoured between mails, so a shutdown never waits for a whole backlog."""
        report = IngestReport()
        self._stop = stop or threading.Event()
        uidvalidity = mailbox.open_inbox()
        self.store.note_uidvalidity(self.folder, uidvalidity)
        pending = mailbox.pending_uids()
        for start in range(0, len(pending), self.batch_size):
            if self._stop.is_set():
                break
            self._drain_batch(mailbox, uidvalidity, pending[start:start + self.batch_size], report)
        return report

    def _drain_batch(self, mailbox: Mailbox, uidvalidity: int, uids: list[int],
                     report: IngestReport) -> None:
        committed: list[int] = []
        try:
            for fetched in mailbox.fetch(uids):
                if self._stop.is_set():
                    break
                report.add(self.process(uidvalidity, fetched))
                committed.append(fetched.uid)
        finally:
            # Only what committed is marked; the rest is read again next time.
            mailbox.mark_processed(committed)
            if committed:
                self.store.note_last_uid(self.folder, max(committed))

    def process(self, uidvalidity: int, fetched: FetchedMail) -> Outcome:
        if self.store.is_recorded(self.folder, uidvalidity, fetched.uid):
            return Outcome("known", "")
        try:
            return self.store.record_mail(self.folder, uidvalidity, fetched.uid, fetched.raw,
                                          fetched.internaldate, self.policy)
        except (OperationalError, DBAPIError) as error:
            if _database_unavailable(error):
                raise  # not this mail's fault: stop, leave it unmarked, try again later
            return self._quarantine(uidvalidity, fetched, error)
        except Exception as error:  # noqa: BLE001 - the guarded place: never lose a mail
            return self._quarantine(uidvalidity, fetched, error)

    def _quarantine(self, uidvalidity: int, fetched: FetchedMail, error: Exception) -> Outcome:
        log.exception("UID %s quarantined", fetched.uid)
        reason = f"processing failed: {type(error).__name__}: {error}"
        return self.store.quarantine(self.folder, uidvalidity, fetched.uid, fetched.raw,
                                     fetched.internaldate, reason[:2000])


def _database_unavailable(error: DBAPIError) -> bool:
    return isinstance(error, OperationalError) or bool(getattr(error, "connection_invalidated", False))
