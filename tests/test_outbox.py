"""Outbox delivery against a real SMTP server (aiosmtpd): retries, back-off, claims."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from bot.models import Event, OutboxMail, Ticket
from bot.outbox import Outbox, RetryPolicy, retry_mail
from bot.transport import FolderTransport, SmtpTransport
from test_store import POLICY, T0, mail, rows, store  # noqa: F401  (fixture)


def outbox_for(store, sink, instance="test", **options) -> Outbox:
    transport = SmtpTransport("127.0.0.1", sink.port, "plain", timeout=5)
    return Outbox(store.engine, store.clock, transport, instance, "support@vendor.example",
                  RetryPolicy(max_attempts=options.pop("max_attempts", 5), base_seconds=30,
                              max_seconds=600, lease_seconds=60), **options)


def queue_acks(store, count: int) -> None:
    for n in range(1, count + 1):
        store.record_mail("INBOX", 1, n, mail(n, f"user{n}@acme.example"), T0, POLICY)


def deliver(outbox):
    return asyncio.run(outbox.deliver_due())


def test_ack_is_delivered_with_null_envelope_sender(store, smtp_sink):
    queue_acks(store, 1)
    report = deliver(outbox_for(store, smtp_sink))
    assert report.sent == 1
    [received] = smtp_sink.messages
    assert received.mail_from == "<>" and received.rcpt_tos == ("user1@acme.example",)
    assert received.message["Auto-Submitted"] == "auto-replied"
    [row] = rows(store, OutboxMail)
    assert row.status == "sent" and row.sent_at == T0 and row.attempts == 1
    assert received.message["Message-ID"] == row.message_id
    assert rows(store, Ticket)[0].acknowledged_at == T0


def test_server_down_backs_off_then_delivers_when_it_returns(store, smtp_sink):
    queue_acks(store, 2)
    outbox = outbox_for(store, smtp_sink)
    smtp_sink.stop()
    report = deliver(outbox)
    assert (report.sent, report.retrying) == (0, 2)
    first = rows(store, OutboxMail)
    assert all(r.status == "pending" and r.attempts == 1 for r in first)
    assert all(r.next_attempt_at == T0 + timedelta(seconds=30) for r in first)
    assert "cannot connect" in first[0].last_error
    # Still down a bit later: the second failure doubles the wait.
    store.clock.advance(timedelta(seconds=30))
    deliver(outbox)
    assert {r.next_attempt_at for r in rows(store, OutboxMail)} == {T0 + timedelta(seconds=90)}
    # Back up, but not yet time: nothing is sent early.
    smtp_sink.start()
    store.clock.advance(timedelta(seconds=10))
    assert deliver(outbox).sent == 0
    store.clock.advance(timedelta(seconds=60))
    assert deliver(outbox).sent == 2
    assert len(smtp_sink.messages) == 2
    assert {r.status for r in rows(store, OutboxMail)} == {"sent"}


def test_temporary_refusal_is_retried(store, smtp_sink):
    queue_acks(store, 1)
    outbox = outbox_for(store, smtp_sink)
    smtp_sink.refuse(451)
    assert deliver(outbox).retrying == 1
    [row] = rows(store, OutboxMail)
    assert row.status == "pending" and "451" in row.last_error
    smtp_sink.accept()
    store.clock.advance(timedelta(seconds=31))
    assert deliver(outbox).sent == 1


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_permanent_refusal_fails_without_retry(store, smtp_sink, stage):
    queue_acks(store, 1)
    smtp_sink.refuse(550, stage=stage)
    assert deliver(outbox_for(store, smtp_sink)).failed == 1
    [row] = rows(store, OutboxMail)
    assert row.status == "failed" and "550" in row.last_error
    assert "mail_failed" in [e.kind for e in rows(store, Event)]


def test_gives_up_after_max_attempts(store, smtp_sink):
    queue_acks(store, 1)
    outbox = outbox_for(store, smtp_sink, max_attempts=3)
    smtp_sink.refuse(421)
    for _ in range(3):
        deliver(outbox)
        store.clock.advance(timedelta(hours=1))
    [row] = rows(store, OutboxMail)
    assert (row.status, row.attempts) == ("failed", 3)
    smtp_sink.accept()
    assert deliver(outbox).sent == 0


def test_dead_sender_leaves_one_uncertain_mail_and_the_rest_is_sent(store, smtp_sink):
    queue_acks(store, 3)
    outbox = outbox_for(store, smtp_sink)
    claimed = outbox._claim_batch()  # a sender that claims a batch and then dies
    assert [r.status for r in claimed] == ["sending"] * 3
    assert deliver(outbox).sent == 0  # the lease still runs: nobody else takes them
    store.clock.advance(timedelta(seconds=61))
    report = deliver(outbox)
    # Only the first row can have left before the crash; the other two were never tried.
    assert (report.uncertain, report.sent) == (1, 2)
    statuses = {r.id: r.status for r in rows(store, OutboxMail)}
    assert statuses == {claimed[0].id: "uncertain", claimed[1].id: "sent", claimed[2].id: "sent"}
    assert len(smtp_sink.messages) == 2
    # The operator decides to resend the uncertain one.
    assert retry_mail(store.engine, store.clock, claimed[0].id).status == "pending"
    assert deliver(outbox).sent == 1


class SlowFolderTransport(FolderTransport):
    """Each send takes 40 virtual seconds (a slow relay); while it lasts, another instance
    looks for expired claims, as it would on its own schedule."""

    def __init__(self, folder, clock, rival: Outbox) -> None:
        super().__init__(folder)
        self.clock, self.rival, self.taken_over = clock, rival, 0

    async def send(self, envelope_from, recipients, raw) -> None:
        self.clock.advance(timedelta(seconds=40))
        self.taken_over += self.rival._expire_claims()
        await super().send(envelope_from, recipients, raw)


def test_a_batch_longer_than_its_lease_keeps_its_claim(store, smtp_sink, tmp_path):
    queue_acks(store, 4)
    rival = outbox_for(store, smtp_sink, "rival")  # lease_seconds=60
    slow = SlowFolderTransport(tmp_path / "out", store.clock, rival)
    sender = Outbox(store.engine, store.clock, slow, "slow", "support@vendor.example", rival.retry)
    assert deliver(sender).sent == 4  # 160 s of sending on a 60 s lease
    assert slow.taken_over == 0
    assert deliver(rival).sent == 0 and smtp_sink.messages == []  # nothing left to send twice
    assert {r.status for r in rows(store, OutboxMail)} == {"sent"}


def test_a_refused_mail_backs_off_alone_and_the_batch_goes_on(store, smtp_sink):
    queue_acks(store, 4)
    outbox = outbox_for(store, smtp_sink)
    smtp_sink.refuse(452, stage="rcpt")
    assert deliver(outbox).retrying == 4  # each one tried once on the same connection
    assert sorted((r.status, r.attempts) for r in rows(store, OutboxMail)) == [("pending", 1)] * 4
    smtp_sink.accept()
    store.clock.advance(timedelta(seconds=31))
    assert deliver(outbox).sent == 4


def test_two_instances_never_send_the_same_mail(store, smtp_sink):
    queue_acks(store, 30)
    a, b = outbox_for(store, smtp_sink, "a"), outbox_for(store, smtp_sink, "b")

    async def both():
        return await asyncio.gather(a.deliver_due(), b.deliver_due())

    reports = asyncio.run(both())
    assert sum(r.sent for r in reports) == 30
    ids = [m.message["Message-ID"] for m in smtp_sink.messages]
    assert len(ids) == len(set(ids)) == 30


def test_redirect_all_replaces_every_recipient(store, smtp_sink):
    queue_acks(store, 2)
    deliver(outbox_for(store, smtp_sink, redirect_all_to="qa@vendor.example"))
    assert {m.rcpt_tos for m in smtp_sink.messages} == {("qa@vendor.example",)}


def test_folder_transport_writes_eml_files(store, tmp_path):
    queue_acks(store, 2)
    outbox = Outbox(store.engine, store.clock, FolderTransport(tmp_path / "out"), "t", "support@vendor.example")
    assert deliver(outbox).sent == 2
    files = sorted((tmp_path / "out").glob("*.eml"))
    assert len(files) == 2 and files[0].name.startswith("0001-supportbot.ack.sup-000001")


def test_a_backlog_is_shared_out_between_connections_and_each_mail_sent_once(store, smtp_sink):
    queue_acks(store, 30)
    report = deliver(outbox_for(store, smtp_sink, connections=3, batch_size=4))
    assert report.sent == 30
    ids = [m.message["Message-ID"] for m in smtp_sink.messages]
    assert len(ids) == len(set(ids)) == 30
    assert len({m.peer for m in smtp_sink.messages}) == 3
    assert {r.status for r in rows(store, OutboxMail)} == {"sent"}


def test_a_single_mail_opens_a_single_connection(store, smtp_sink):
    queue_acks(store, 1)
    assert deliver(outbox_for(store, smtp_sink, connections=3)).sent == 1
    assert len({m.peer for m in smtp_sink.messages}) == 1


def test_server_down_with_several_connections_backs_off_every_mail_once(store, smtp_sink):
    queue_acks(store, 7)
    outbox = outbox_for(store, smtp_sink, connections=3, batch_size=3)
    smtp_sink.stop()
    report = deliver(outbox)
    assert (report.sent, report.retrying) == (0, 7)
    assert {(r.status, r.attempts, r.claimed_by) for r in rows(store, OutboxMail)} == {("pending", 1, None)}
    smtp_sink.start()
    store.clock.advance(timedelta(seconds=31))
    assert deliver(outbox).sent == 7


def test_a_dead_sender_leaves_at_most_one_uncertain_mail_per_connection(store, smtp_sink):
    queue_acks(store, 6)
    outbox = outbox_for(store, smtp_sink, connections=2)
    claims = [outbox._claim_batch(3), outbox._claim_batch(3)]  # two connections' claims, then death
    store.clock.advance(timedelta(seconds=61))
    report = deliver(outbox)
    assert (report.uncertain, report.sent) == (2, 4)
    statuses = {r.id: r.status for r in rows(store, OutboxMail)}
    assert [statuses[claim[0].id] for claim in claims] == ["uncertain", "uncertain"]
    assert len(smtp_sink.messages) == 4
