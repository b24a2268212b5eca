"""Drain the inbox: fetch new mail in chunks, record it in slices of COMMIT_EVERY mails, one
transaction each, and mark each slice on the server after its commit.

Marking comes strictly after the commit, so a crash in between only means the slice is read
again, and the store recognises every mail of it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from bot import decide as d
from bot.mailbox import Mailbox
from bot.store import Outcome, Store


# Mails per transaction: enough to amortise the commit, few enough that the outbox (which
# records each delivery at once) never waits long for SQLite's single write lock.
COMMIT_EVERY = 20


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
    def __init__(self, store: Store, policy: d.Policy, folder: str, batch_size: int = 50,
                 on_queued: Callable[[], None] = lambda: None) -> None:
        self.store, self.policy, self.folder, self.batch_size = store, policy, folder, batch_size
        self.on_queued = on_queued  # called after each commit that queued mail: wakes delivery

    def drain(self, mailbox: Mailbox, stop: threading.Event | None = None) -> IngestReport:
        """Read every pending mail once. `stop` is honoured between slices, so a shutdown
        never waits for a whole backlog."""
        stop = stop or threading.Event()
        report = IngestReport()
        uidvalidity = mailbox.open_inbox()
        self.store.note_uidvalidity(self.folder, uidvalidity)
        pending = mailbox.pending_uids()
        for start in range(0, len(pending), self.batch_size):
            for chunk in mailbox.fetch_chunks(pending[start:start + self.batch_size]):
                committed = []
                for first in range(0, len(chunk), COMMIT_EVERY):
                    if stop.is_set():
                        break
                    committed += self._commit(uidvalidity, chunk[first:first + COMMIT_EVERY], report)
                # One STORE per chunk, after its commits. Should anything fail before it, the
                # committed mails are read again and known: nothing is lost or doubled.
                mailbox.mark_processed(committed)
                if stop.is_set():
                    return report
        return report

    def _commit(self, uidvalidity: int, mails, report: IngestReport) -> list[int]:
        outcomes = self.store.record_batch(self.folder, uidvalidity, mails, self.policy)
        for outcome in outcomes:
            report.add(outcome)
        if any(outcome.queued for outcome in outcomes):
            self.on_queued()
        return [mail.uid for mail in mails]
