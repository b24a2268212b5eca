"""Drain the inbox: fetch new mail, record it in slices of up to SLICE_MAILS mails, one
transaction each, and mark each slice on the server after its commit.

Marking comes strictly after the commit, so a crash in between only means the slice is read
again, and the store recognises every mail of it.

Each slice is read (parsed) before the one ahead of it is recorded, and its texts are
handed to the text worker (bot/textworker.py), which detects their languages and grades
their severity in its own process meanwhile. Slices run across the server's fetch
batches, so that this overlap never stops at a batch's end.
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


# Mails per transaction. Each slice costs about 17 ms whatever its size (its snapshot, the
# queries that load what its decisions need, the checks and the commit): 50 mails cost
# ~0.5 ms a mail less than 20 (tests/benchmarks/store.py), and 100 no less than 50 but 5 MB
# more at peak. The write takes about 0.4 ms a mail, so delivery, which records each mail
# it sends, waits at most ~20 ms for SQLite's write lock.
SLICE_MAILS = 50
# What a slice may hold of raw mail: a slice and the one read ahead are in memory at once.
SLICE_BYTES = 10 * 1024 * 1024


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
                 worker: TextWorker | None = None, slice_mails: int = SLICE_MAILS) -> None:
        self.store, self.policy, self.folder, self.batch_size = store, policy, folder, batch_size
        self.slice_mails = slice_mails
        self.on_queued = on_queued  # called after each commit that queued mail: wakes delivery
        self.worker = worker  # None: decide() detects and grades in this process

    def drain(self, mailbox: Mailbox, stop: threading.Event | None = None) -> IngestReport:
        """Read every pending mail once. `stop` is honoured between slices, so a shutdown
        never waits for a whole backlog."""
        stop = stop or threading.Event()
        report = IngestReport()
        uidvalidity = mailbox.open_inbox()
        self.store.note_uidvalidity(self.folder, uidvalidity)
        for piece in self._read_ahead(self._slices(mailbox, mailbox.pending_uids())):
            # One STORE per slice, after its commit. Should anything fail before it, the
            # committed mails are read again and known: nothing is lost or doubled.
            mailbox.mark_processed(self._commit(uidvalidity, piece, report))
            if stop.is_set():
                break
        return report

    def _slices(self, mailbox: Mailbox, pending: list[int]) -> Iterator[list[FetchedMail]]:
        """The pending mails as the server gives them (batch_size UIDs per request), cut into
        slices of at most slice_mails mails and SLICE_BYTES (a slice of one may be larger)."""
        mails: list[FetchedMail] = []
        size = 0
        for start in range(0, len(pending), self.batch_size):
            for chunk in mailbox.fetch_chunks(pending[start:start + self.batch_size]):
                for mail in chunk:
                    if mails and size + len(mail.raw) > SLICE_BYTES:
                        yield mails
                        mails, size = [], 0
                    mails.append(mail)
                    size += len(mail.raw)
                    if len(mails) == self.slice_mails:
                        yield mails
                        mails, size = [], 0
        if mails:
            yield mails

    def _read_ahead(self, slices: Iterator[list[FetchedMail]]) -> Iterator[_Slice]:
        """The slices, read one ahead: the next slice is fetched and parsed, and its texts
        sent to the text worker, before the current one is handed out to be recorded."""
        ahead = None
        for mails in slices:
            following = self._read(mails)
            if ahead is not None:
                yield ahead
            ahead = following
        if ahead is not None:
            yield ahead

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
