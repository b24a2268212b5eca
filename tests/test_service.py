"""The service end to end: real Dovecot, real SMTP server, SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
import shutil
import threading
from datetime import datetime, timezone

import pytest
from sqlmodel import Session, select

from bot.database import upgrade
from bot.models import Message, OutboxMail, Ticket
from bot.service import Service
from helpers import count, customer_mail, settings_for, unmarked, wait_until, write_config

# In the past: Dovecot replaces a future INTERNALDATE by the time of the APPEND.
ARRIVAL = datetime(2026, 11, 20, 8, 15, 42, tzinfo=timezone.utc)


def start_service(tmp_path, dovecot, sink, db_url, **sections) -> Service:
    settings = settings_for(write_config(tmp_path, dovecot, sink, db_url, **sections), dovecot)
    upgrade(settings.database.url)
    service = Service(settings)
    service.start()
    return service


def test_mail_in_ticket_and_ack_out(tmp_path, dovecot, smtp_sink, db_url):
    dovecot.append(customer_mail(1), internaldate=ARRIVAL)
    dovecot.append(b"From: bob@globex.example\r\nAuto-Submitted: auto-replied\r\n"
                   b"Subject: Out of office\r\nMessage-ID: <oof@globex>\r\n\r\naway\r\n")
    dovecot.append(customer_mail(1))  # the same mail appended twice
    service = start_service(tmp_path, dovecot, smtp_sink, db_url)
    try:
        wait_until(lambda: not unmarked(dovecot), what="all mails marked")
        [ack] = smtp_sink.wait_for(1)
        wait_until(lambda: count(service.engine, OutboxMail, OutboxMail.status == "sent"), what="ack sent")
    finally:
        service.stop()
    assert ack.rcpt_tos == ("customer1@acme.example",) and ack.mail_from == "<>"
    assert ack.message["Subject"] == "[SUP-000001] Request number 1"
    assert ack.message["In-Reply-To"] == "<req-1@acme.example>"
    with Session(service.engine) as session:
        [ticket] = session.exec(select(Ticket)).all()
        assert ticket.received_at == ARRIVAL  # the SLA clock starts at INTERNALDATE, not Date:
        assert ticket.acknowledged_at is not None
        kinds = sorted(m.kind for m in session.exec(select(Message)).all())
    assert kinds == ["automatic", "new_ticket"]
    assert len(smtp_sink.messages) == 1


def test_new_mail_is_seen_while_running(tmp_path, dovecot, smtp_sink, db_url):
    service = start_service(tmp_path, dovecot, smtp_sink, db_url, imap={"poll_seconds": 60})
    try:
        for n in range(1, 4):
            dovecot.append(customer_mail(n))
            smtp_sink.wait_for(n)  # IDLE wakes the service, far before the 60 s poll
    finally:
        service.stop()
    assert count(service.engine, Ticket) == 3


def test_move_mode_moves_processed_mail_and_never_deletes(tmp_path, dovecot, smtp_sink):
    for n in range(1, 4):
        dovecot.append(customer_mail(n))
    db_url = f"sqlite:///{tmp_path / 'bot.db'}"
    service = start_service(tmp_path, dovecot, smtp_sink, db_url,
                            imap={"mark": "move", "processed_folder": "Done"})
    try:
        smtp_sink.wait_for(3)
    finally:
        service.stop()
    client = dovecot.client()
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        assert client.select_folder("Done")[b"EXISTS"] == 3
    finally:
        client.logout()


def test_hostile_mail_never_stops_the_loop(tmp_path, dovecot, smtp_sink, db_url):
    hostile = [
        b"\r\n",  # no header at all (Dovecot refuses a zero-byte APPEND)
        b"\x00\xff\xfe garbage with no header block at all",
        b"From: \xff\xfe\x00bad <x@\xff>\r\nSubject: \x00\x01\r\n\r\n\xff",
        b"From: a@acme.example\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--",
        b"From: b@acme.example\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n"
        b"Subject: =?x-nope?q?broken?=\r\n\r\n\xe9t\xe9\r\n",
        _huge_attachment(),
    ]
    for raw in hostile:
        dovecot.append(raw)
    dovecot.append(customer_mail(9))
    service = start_service(tmp_path, dovecot, smtp_sink, db_url)
    try:
        wait_until(lambda: not unmarked(dovecot), what="every mail marked")
        smtp_sink.wait_for(1)
    finally:
        service.stop()
    with Session(service.engine) as session:
        messages = session.exec(select(Message)).all()
    assert len(messages) == len(hostile) + 1  # every one recorded: a ticket or a quarantine reason
    assert all(m.kind != "quarantined" or m.reason for m in messages)
    acked = {m.rcpt_tos[0] for m in smtp_sink.wait_for(2)}
    assert {"customer9@acme.example", "big@acme.example"} <= acked


def _huge_attachment() -> bytes:
    """A 20 MB attachment: read in its own FETCH round trip, recorded, acknowledged."""
    body = base64.encodebytes(os.urandom(15 * 1024 * 1024))
    return (b"From: big@acme.example\r\nSubject: logs attached\r\nMessage-ID: <big@acme>\r\n"
            b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            b"See the attached dump.\r\n--B\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=dump.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + body + b"--B--\r\n")


def test_uidvalidity_change_reads_again_without_duplicates(tmp_path, dovecot, smtp_sink, db_url):
    for n in range(1, 4):
        dovecot.append(customer_mail(n))
    service = start_service(tmp_path, dovecot, smtp_sink, db_url)
    try:
        smtp_sink.wait_for(3)
        wait_until(lambda: not unmarked(dovecot), what="all marked")
    finally:
        service.stop()
    _rebuild_mailbox(dovecot)  # new UIDVALIDITY, and our keywords are gone
    assert len(unmarked(dovecot)) == 3
    service = start_service(tmp_path, dovecot, smtp_sink, db_url)
    try:
        wait_until(lambda: not unmarked(dovecot), what="re-read and marked")
    finally:
        service.stop()
    assert count(service.engine, Ticket) == 3
    assert count(service.engine, OutboxMail) == 3
    assert len(smtp_sink.messages) == 3


def _rebuild_mailbox(dovecot) -> None:
    """What a restored or migrated mailbox looks like: same mails, new UIDs, no keywords."""
    dovecot.stop_keep_data() if hasattr(dovecot, "stop_keep_data") else None
    maildir = dovecot.maildir
    for name in os.listdir(maildir):
        if name.startswith("dovecot"):
            path = maildir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for sub in ("cur", "new"):
        for path in (maildir / sub).iterdir():
            path.rename(maildir / "new" / path.name.split(":")[0])
    dovecot.restart()


def test_outdated_schema_refuses_to_start(tmp_path, dovecot, smtp_sink):
    settings = settings_for(write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'new.db'}"), dovecot)
    with pytest.raises(Exception, match="supportbot db upgrade"):
        Service(settings).start()


def test_ingest_and_delivery_can_run_as_two_instances(tmp_path, dovecot, smtp_sink, db_url):
    settings = settings_for(write_config(tmp_path, dovecot, smtp_sink, db_url), dovecot)
    upgrade(settings.database.url)
    for n in range(1, 6):
        dovecot.append(customer_mail(n))
    reader = Service(settings, role="ingest")
    reader.start()
    try:
        wait_until(lambda: not unmarked(dovecot), what="all mails read")
        wait_until(lambda: count(reader.engine, OutboxMail) == 5, what="acks queued")
        assert smtp_sink.messages == []  # the reading instance never sends
        sender = Service(settings, role="deliver")
        sender.start()
        try:
            smtp_sink.wait_for(5)
        finally:
            sender.stop()
    finally:
        reader.stop()
    assert len({m.message["Message-ID"] for m in smtp_sink.messages}) == 5


def test_ack_waits_while_smtp_is_down_and_goes_out_when_it_returns(tmp_path, dovecot, smtp_sink, db_url):
    smtp_sink.stop()
    service = start_service(tmp_path, dovecot, smtp_sink, db_url)
    try:
        dovecot.append(customer_mail(1))
        wait_until(lambda: count(service.engine, OutboxMail, OutboxMail.attempts >= 2), what="retries")
        with Session(service.engine) as session:
            [row] = session.exec(select(OutboxMail)).all()
        assert row.status == "pending" and "cannot connect" in row.last_error
        assert not unmarked(dovecot)  # the mail itself is safely recorded and marked
        smtp_sink.start()
        [ack] = smtp_sink.wait_for(1, timeout=20)
    finally:
        service.stop()
    assert ack.message["Message-ID"] == row.message_id
    assert count(service.engine, OutboxMail, OutboxMail.status == "sent") == 1


def test_a_stop_mid_drain_marks_exactly_what_was_committed(tmp_path, dovecot, smtp_sink, db_url):
    per_slice = 4
    total = per_slice * 3 + 1  # a slice runs across two fetch batches
    for n in range(total):
        dovecot.append(customer_mail(n))
    settings = settings_for(write_config(tmp_path, dovecot, smtp_sink, db_url, imap={"batch_size": 5}),
                            dovecot)
    upgrade(settings.database.url)
    service = Service(settings)  # not started: the test drives one drain itself
    stop = threading.Event()
    service.ingestor.slice_mails = per_slice
    service.ingestor.on_queued = stop.set  # stop right after the first slice commits
    try:
        service.mailbox.connect()
        first = service.ingestor.drain(service.mailbox, stop)
        assert first.read == per_slice
        assert len(unmarked(dovecot)) == total - per_slice  # the committed slice, no more
        assert count(service.engine, Ticket) == per_slice
        rest = service.ingestor.drain(service.mailbox)
    finally:
        service.stop()
    assert rest.read == total - per_slice and rest.outcomes == {"new_ticket": total - per_slice}
    assert not unmarked(dovecot)
    assert count(service.engine, Ticket) == total
