"""The language worker answers exactly as detect() does, and its answers reach decide()."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import Session, select

from bot import decide as d
from bot.clock import VirtualClock
from bot.database import make_engine, upgrade
from bot.ingest import Ingestor
from bot.langworker import LanguageWorker
from bot.language import SAMPLE_CHARS, Detected, detect
from bot.mailbox import FetchedMail
from bot.models import Ticket
from bot.rules import load_rules
from bot.store import Sender, Store
from bot.templating import Templates
from helpers import customer_mail

TEXTS = [
    "Hello, our dashboard returns HTTP 500 since this morning. Could you have a look?",
    "Bonjour, le tableau de bord ne répond plus depuis ce matin. Pouvez-vous regarder ?",
    "Guten Tag, seit heute Morgen antwortet das Dashboard nicht mehr. Bitte prüfen Sie das.",
    "Hi\n" + "The export fails again. " * 80 + "Die Fehlermeldung lautet: Verbindung fehlgeschlagen.",
    "12345 ---",
    "",
]


def test_the_worker_answers_as_detect_does_batch_after_batch():
    worker = LanguageWorker()
    try:
        first, second, skipped, last = (worker.ask(TEXTS), worker.ask(TEXTS[:2]), worker.ask(TEXTS[2:]),
                                        worker.ask(TEXTS[::-1]))
        assert worker.answer(first) == {text[:SAMPLE_CHARS]: detect(text) for text in TEXTS}
        assert worker.answer(second) == {text[:SAMPLE_CHARS]: detect(text) for text in TEXTS[:2]}
        assert worker.answer(last) == {text[:SAMPLE_CHARS]: detect(text) for text in TEXTS}  # `skipped` dropped
        assert worker.answer(skipped) == {}
    finally:
        worker.close()
    assert worker.pid is None


def test_a_worker_that_dies_leaves_detection_to_the_ingest_process():
    worker = LanguageWorker()
    try:
        worker.answer(worker.ask(TEXTS[:1]))
        worker._process.kill()
        assert worker.answer(worker.ask(TEXTS)) == {}
        assert worker.answer(worker.ask(TEXTS)) == {}  # not restarted: detect() does the work
    finally:
        worker.close()


class _Recording:
    """A worker that claims every text it is asked about is surely French."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def ask(self, texts: list[str]) -> int:
        self.texts += texts
        return 0

    def answer(self, batch: int) -> dict[str, Detected]:
        return {text[:SAMPLE_CHARS]: Detected("fr", 0.99, 300) for text in self.texts}


class _Inbox:
    def __init__(self, raws: list[bytes]) -> None:
        self.mails = [FetchedMail(uid, datetime(2026, 11, 23, 9, tzinfo=timezone.utc), raw)
                      for uid, raw in enumerate(raws, 1)]
        self.marked: list[int] = []

    def open_inbox(self) -> int:
        return 1

    def pending_uids(self) -> list[int]:
        return [mail.uid for mail in self.mails]

    def fetch_chunks(self, uids):
        yield [mail for mail in self.mails if mail.uid in uids]

    def mark_processed(self, uids: list[int]) -> None:
        self.marked += uids


def test_decide_is_answered_for_the_texts_the_ingestor_hands_to_the_worker(tmp_path):
    """If decide() ever detects another text than the ingestor sends ahead, the worker's
    work is wasted (and this fails): the English mail would be answered in English."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    store = Store(engine, VirtualClock(datetime(2026, 11, 23, 10, tzinfo=timezone.utc)), Templates(),
                  Sender("support@vendor.example", "Vendor Support", "vendor.example"))
    policy = d.Policy(support_address="support@vendor.example", message_id_domain="vendor.example",
                      rules=load_rules())
    worker = _Recording()
    inbox = _Inbox([customer_mail(1), customer_mail(2)])
    try:
        report = Ingestor(store, policy, "INBOX", languages=worker).drain(inbox)
        with Session(engine) as session:
            languages = [ticket.language for ticket in session.exec(select(Ticket))]
    finally:
        engine.dispose()
    assert report.read == 2 and inbox.marked == [1, 2]
    assert len(worker.texts) == 2
    assert languages == ["fr", "fr"]
