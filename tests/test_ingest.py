"""How the ingestor cuts the inbox into slices, reads one ahead, and marks after commits."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bot import decide as d
from bot import ingest
from bot.clock import VirtualClock
from bot.database import make_engine, upgrade
from bot.ingest import Ingestor
from bot.mailbox import FetchedMail
from bot.store import Sender, Store
from bot.templating import Templates
from helpers import customer_mail

ARRIVED = datetime(2026, 11, 23, 9, tzinfo=timezone.utc)


class _Inbox:
    """A mailbox that writes down what is asked of it, in order."""

    def __init__(self, raws: list[bytes], log: list) -> None:
        self.mails = {uid: FetchedMail(uid, ARRIVED, raw) for uid, raw in enumerate(raws, 1)}
        self.log = log

    def open_inbox(self) -> int:
        return 1

    def pending_uids(self) -> list[int]:
        return sorted(self.mails)

    def fetch_chunks(self, uids):
        self.log.append(("fetch", list(uids)))
        yield [self.mails[uid] for uid in uids]

    def mark_processed(self, uids: list[int]) -> None:
        self.log.append(("mark", list(uids)))


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    yield Store(engine, VirtualClock(datetime(2026, 11, 23, 10, tzinfo=timezone.utc)), Templates(),
                Sender("support@vendor.example", "Vendor Support", "vendor.example"))
    engine.dispose()


def _ingestor(store: Store, log: list, **options) -> Ingestor:
    ingestor = Ingestor(store, d.Policy(support_address="support@vendor.example",
                                        message_id_domain="vendor.example"), "INBOX", **options)
    record = store.record_batch

    def logged(folder, uidvalidity, mails, policy, readings=None):
        log.append(("commit", [mail.uid for mail in mails]))
        return record(folder, uidvalidity, mails, policy, readings)

    store.record_batch = logged
    return ingestor


def test_slices_run_across_fetch_batches_and_each_is_marked_after_its_commit(store):
    log: list = []
    inbox = _Inbox([customer_mail(n) for n in range(7)], log)
    report = _ingestor(store, log, batch_size=3, slice_mails=4).drain(inbox)
    assert report.read == 7 and report.outcomes == {"new_ticket": 7}
    assert log == [
        ("fetch", [1, 2, 3]), ("fetch", [4, 5, 6]),  # the first slice, 1-4
        ("fetch", [7]),  # the second slice is read ahead, before the first commits
        ("commit", [1, 2, 3, 4]), ("mark", [1, 2, 3, 4]),
        ("commit", [5, 6, 7]), ("mark", [5, 6, 7]),
    ]


def test_a_slice_ends_before_its_raw_mail_would_pass_the_byte_bound(store, monkeypatch):
    raws = [customer_mail(n) for n in range(5)]
    monkeypatch.setattr(ingest, "SLICE_BYTES", len(raws[0]) * 2 + 100)
    log: list = []
    report = _ingestor(store, log, batch_size=50, slice_mails=100).drain(_Inbox(raws, log))
    assert report.read == 5
    assert [uids for what, uids in log if what == "commit"] == [[1, 2], [3, 4], [5]]


def test_a_mail_larger_than_the_byte_bound_is_a_slice_of_its_own(store, monkeypatch):
    raws = [customer_mail(0), customer_mail(1) + b"x" * 5000 + b"\r\n", customer_mail(2)]
    monkeypatch.setattr(ingest, "SLICE_BYTES", 4000)
    log: list = []
    report = _ingestor(store, log, batch_size=50, slice_mails=100).drain(_Inbox(raws, log))
    assert report.outcomes == {"new_ticket": 3}
    assert [uids for what, uids in log if what == "commit"] == [[1], [2], [3]]
