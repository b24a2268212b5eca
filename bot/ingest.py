"""Drain the inbox: fetch new mail in chunks, record it in slices of COMMIT_EVERY mails, one
transaction each, and mark each chunk on the server after the commits of its slices.

Marking comes strictly after the commit, so a crash in between only means the chunk is read
again, and the store recognises every mail of it.

Each slice is read (parsed) before the one ahead of it is recorded, and its texts are
handed to the text worker (bot/textworker.py), which detects their languages and grades
their severity in its own process meanwhile.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from bot import decide as d
from bot.classify import graded_elsewhere
from bot.language import detected_elsewhere
from bot.textworker import Answers, TextWorker
from bot.mailbox import FetchedMail, Mailbox
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


@dataclass
class _Slice:
    mails: list[FetchedMail]
    readings: list[d.Reading]
    texts: int | None  # the text worker's batch for them


class Ingestor:
    def __init__(self, store: Store, policy: d.Policy, folder: str, batch_size: int = 50,
                 on_queued: Callable[[], None] = lambda: None,
                 worker: TextWorker | None = None) -> None:
        self.store, self.policy, self.folder, self.batch_size = store, policy, folder, batch_size
        self.on_queued = on_queued  # called after each commit that queued mail: wakes delivery
        self.worker = worker  # None: decide() detects and grades in this process

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
                for piece in self._read_ahead(chunk, stop):
                    committed += self._commit(uidvalidity, piece, report)
                # One STORE per chunk, after its commits. Should anything fail before it, the
                # committed mails are read again and known: nothing is lost or doubled.
                mailbox.mark_processed(committed)
                if stop.is_set():
                    return report
        return report

    def _read_ahead(self, chunk: list[FetchedMail], stop: threading.Event) -> Iterator[_Slice]:
        """The chunk's slices, read one ahead: the next slice is parsed, and its texts sent
        to the text worker, before the current one is handed out to be recorded."""
        slices = [chunk[first:first + COMMIT_EVERY] for first in range(0, len(chunk), COMMIT_EVERY)]
        ahead = self._read(slices[0])
        for following in slices[1:] + [None]:
            if stop.is_set():
                return
            current = ahead
            ahead = self._read(following) if following else None
            yield current

    def _read(self, mails: list[FetchedMail]) -> _Slice:
        readings = [d.read(mail.raw) for mail in mails]  # pure: before the write lock
        texts = [(r.mail.subject, r.mail.text) for r in readings if r.mail]  # as decide() reads them
        return _Slice(mails, readings, self.worker and self.worker.ask(texts))

    def _commit(self, uidvalidity: int, piece: _Slice, report: IngestReport) -> list[int]:
        known = self.worker.answer(piece.texts) if self.worker else Answers()
        with detected_elsewhere.given(known.detected), graded_elsewhere.given(known.graded):
            outcomes = self.store.record_batch(self.folder, uidvalidity, piece.mails, self.policy,
                                               piece.readings)
        for outcome in outcomes:
            report.add(outcome)
        if any(outcome.queued for outcome in outcomes):
            self.on_queued()
        return [mail.uid for mail in piece.mails]
