"""The text worker answers exactly as detect() and grade() do, and its answers reach decide()."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlmodel import Session, select

from bot import decide as d
from bot.clock import VirtualClock
from bot.database import make_engine, upgrade
from bot.ingest import Ingestor
from bot.classify import Graded, grade, graded_elsewhere, graded_key
from bot.contracts import import_file
from bot.language import Detected, detect, detected_elsewhere
from bot.mailbox import FetchedMail
from bot.models import Ticket
from bot.rules import load_rules
from bot.store import Sender, Store
from bot.templating import Templates
from bot.textworker import Answers, TextWorker, _Pipes, sample
from helpers import customer_mail

SEVERITY = load_rules().severity
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ENTITLED = "alice.martin@acme.example"  # Kestra Enterprise, English
TEXTS = [
    ("Dashboard down", "Hello, our dashboard returns HTTP 500 since this morning. Could you have a look?"),
    ("Plus rien ne marche", "Bonjour, le tableau de bord ne répond plus depuis ce matin, aucun contournement."),
    ("Frage", "Guten Tag, seit heute Morgen antwortet das Dashboard nicht mehr. Bitte prüfen Sie das."),
    ("[URGENT] export", "Hi\n" + "The export fails again. " * 80 + "Die Fehlermeldung lautet: Verbindung fehlgeschlagen."),
    ("Question", "How do I configure the LDAP login? " * 100 + "The production is down."),  # past TEXT_LIMIT
    ("", "12345 ---"),
    ("", ""),
]


def in_process(texts, default_level: int = 3) -> list[tuple[Detected, Graded]]:
    return [(detect(f"{subject}\n{body}"), grade(SEVERITY, subject, body, default_level)) for subject, body in texts]


def given(answers: Answers, texts, default_level: int = 3) -> list[tuple[Detected, Graded]]:
    """What decide() gets from detect() and grade() with these answers given."""
    with detected_elsewhere.given(answers.detected), graded_elsewhere.given(answers.graded):
        return in_process(texts, default_level)


def test_the_worker_answers_as_detect_and_grade_do_batch_after_batch():
    worker = TextWorker(SEVERITY)
    try:
        first, second, skipped, last = (worker.ask(TEXTS), worker.ask(TEXTS[:2]), worker.ask(TEXTS[2:]),
                                        worker.ask(TEXTS[::-1]))
        answers = worker.answer(first)
        assert len(answers.detected) == len(answers.graded) == len(TEXTS)
        assert given(answers, TEXTS) == in_process(TEXTS)
        assert given(answers, TEXTS, default_level=4) == in_process(TEXTS, default_level=4)  # the contract's default
        assert len(worker.answer(second).graded) == 2
        assert len(worker.answer(last).graded) == len(TEXTS)  # `skipped` dropped
        assert worker.answer(skipped) == Answers()
    finally:
        worker.close()
    assert worker.pid is None


def test_answers_are_used_and_only_for_the_evidence_they_were_graded_with():
    """A stand-in answer proves the lookup: another evidence object gets its own grading."""
    subject, body = TEXTS[0]
    worker = TextWorker(SEVERITY)
    try:
        answers = worker.answer(worker.ask([(subject, body)]))
    finally:
        worker.close()
    [key] = answers.graded
    answers.graded[key] = Graded(1, "evidence")
    with graded_elsewhere.given(answers.graded):
        assert grade(SEVERITY, subject, body, 3) == Graded(1, "evidence")
        assert grade(load_rules().severity, subject, body, 3) == grade(SEVERITY, subject, body + " ", 3)


def test_without_evidence_the_worker_only_detects():
    worker = TextWorker()
    try:
        answers = worker.answer(worker.ask(TEXTS))
    finally:
        worker.close()
    assert answers.graded == {} and len(answers.detected) == len(TEXTS)
    with detected_elsewhere.given(answers.detected):
        assert [detect(f"{s}\n{b}") for s, b in TEXTS] == [d for d, _ in in_process(TEXTS)]


def test_a_worker_that_dies_leaves_the_work_to_the_ingest_process():
    worker = TextWorker(SEVERITY)
    try:
        worker.answer(worker.ask(TEXTS[:1]))
        worker._process.kill()
        assert worker.answer(worker.ask(TEXTS)) == Answers()
        assert worker.answer(worker.ask(TEXTS)) == Answers()  # not restarted: the ingest process does the work
    finally:
        worker.close()


def test_a_worker_that_cannot_be_reached_at_start_leaves_the_work_to_the_ingest_process(monkeypatch):
    def broken_pipe(self, value):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(_Pipes, "send", broken_pipe)
    worker = TextWorker(SEVERITY)
    try:
        assert worker.answer(worker.ask(TEXTS)) == Answers()
        assert worker.pid is None  # stopped, and not started again
        assert worker.answer(worker.ask(TEXTS)) == Answers()
    finally:
        worker.close()


class _Recording:
    """A worker that claims every text it is asked about is surely French, and of low severity."""

    def __init__(self, severity) -> None:
        self.severity = severity
        self.texts: list[tuple[str, str]] = []

    def ask(self, texts: list[tuple[str, str]]) -> int:
        self.texts += texts
        return 0

    def answer(self, batch: int) -> Answers:
        return Answers({sample(s, b): Detected("fr", 0.99, 300) for s, b in self.texts},
                       {graded_key(self.severity, s, b): Graded(4, "evidence") for s, b in self.texts})


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
    """If decide() ever detects or grades another text than the ingestor sends ahead, the
    worker's work is wasted (and this fails): the English mails would be answered in
    English, and graded as their words say."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    store = Store(engine, VirtualClock(datetime(2026, 11, 23, 10, tzinfo=timezone.utc)), Templates(),
                  Sender("support@vendor.example", "Vendor Support", "vendor.example"))
    rules = load_rules()
    import_file(engine, SAMPLES / "contracts.yaml", rules)
    policy = d.Policy(support_address="support@vendor.example", message_id_domain="vendor.example",
                      rules=rules)
    worker = _Recording(rules.severity)
    inbox = _Inbox([customer_mail(1, sender=ENTITLED), customer_mail(2, sender=ENTITLED)])
    try:
        report = Ingestor(store, policy, "INBOX", worker=worker).drain(inbox)
        with Session(engine) as session:
            tickets = [(t.status, t.language, t.severity) for t in session.exec(select(Ticket))]
    finally:
        engine.dispose()
    assert report.read == 2 and inbox.marked == [1, 2]
    assert len(worker.texts) == 2
    assert tickets == [("open", "fr", 4), ("open", "fr", 4)]  # on their own: English, severity 1
