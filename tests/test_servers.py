"""Smoke tests: the real test servers (tests/servers.py) behave like the real thing."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import aiosmtplib
import pytest
import sqlalchemy as sa
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from bot.mailbox import idle_responses
from servers import DovecotServer, PostgresServer, SmtpSink

KEYWORD = "$SupportbotProcessed"


def make_raw(subject: str = "Printer on fire", msgid: str = "<a1@customer.example>") -> bytes:
    return (
        "From: Alice <alice@customer.example>\r\n"
        "To: support@vendor.example\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {msgid}\r\n"
        "Date: Mon, 03 Mar 2025 09:15:00 +0100\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "It is really on fire.\r\n"
    ).encode()


# --------------------------------------------------------------------------- Dovecot


def test_dovecot_listens_on_loopback_only(dovecot: DovecotServer):
    assert dovecot.host == "127.0.0.1"
    assert dovecot.port and dovecot.port > 1024
    assert dovecot.log_path.exists()
    assert dovecot.username == "support" and dovecot.password
    with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=5) as c:
        with pytest.raises(LoginError):
            c.login(dovecot.username, "wrong-" + dovecot.password)
    with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=5) as c:
        c.login(dovecot.username, dovecot.password)
        caps = c.capabilities()
        for cap in (b"IDLE", b"MOVE", b"UIDPLUS"):
            assert cap in caps


def test_dovecot_append_search_fetch_roundtrip(dovecot: DovecotServer):
    when = datetime(2025, 3, 3, 9, 15, 42, tzinfo=timezone(timedelta(hours=1)))
    raw = make_raw()
    uid = dovecot.append(raw, internaldate=when, flags=[r"\Seen"])
    assert uid == 1
    # Maildir on disk (Dovecot stores LF line endings, serves CRLF)
    files = list((dovecot.maildir / "cur").iterdir()) + list((dovecot.maildir / "new").iterdir())
    assert len(files) == 1 and files[0].read_bytes() == raw.replace(b"\r\n", b"\n")

    with dovecot.client() as c:
        c.normalise_times = False  # keep the server's zone: tz-aware datetimes
        c.select_folder("INBOX")
        assert c.search(["HEADER", "Message-ID", "<a1@customer.example>"]) == [uid]
        assert c.search(["SUBJECT", "fire"]) == [uid]
        assert c.search(["SUBJECT", "nonexistent"]) == []
        data = c.fetch([uid], ["BODY.PEEK[]", "INTERNALDATE", "FLAGS"])[uid]
        assert data[b"BODY[]"] == raw
        # same instant; Maildir keeps INTERNALDATE as the file mtime, so the zone offset
        # comes back as the server's zone (UTC here), not the +01:00 we sent
        assert data[b"INTERNALDATE"] == when
        assert data[b"INTERNALDATE"].tzinfo is not None
        assert b"\\Seen" in data[b"FLAGS"]


def test_dovecot_keyword_and_unkeyword_search(dovecot: DovecotServer):
    for i in range(3):
        dovecot.append(make_raw(f"msg {i}", f"<m{i}@x>"))
    with dovecot.client() as c:
        c.select_folder("INBOX")
        uids = c.search("ALL")
        assert uids == [1, 2, 3]
        c.add_flags([2], [KEYWORD])
        assert KEYWORD.encode() in c.get_flags([2])[2]
        assert c.search(["UNKEYWORD", KEYWORD]) == [1, 3]
        assert c.search(["KEYWORD", KEYWORD]) == [2]
    # keywords persist across sessions
    with dovecot.client() as c:
        c.select_folder("INBOX", readonly=True)
        assert c.search(["UNKEYWORD", KEYWORD]) == [1, 3]


def test_dovecot_create_folder_and_move(dovecot: DovecotServer):
    dovecot.create_folder("Processed")
    dovecot.append(make_raw("one", "<1@x>"))
    dovecot.append(make_raw("two", "<2@x>"))
    with dovecot.client() as c:
        assert "Processed" in [name for _flags, _delim, name in c.list_folders()]
        c.select_folder("INBOX")
        c.move([1], "Processed")
        assert c.search("ALL") == [2]
        c.select_folder("Processed")
        uids = c.search("ALL")
        assert len(uids) == 1
        assert b"Subject: one" in c.fetch(uids, ["BODY.PEEK[HEADER]"])[uids[0]][b"BODY[HEADER]"]
    # append into a non-INBOX folder through the helper
    uid = dovecot.append(make_raw("three", "<3@x>"), folder="Processed")
    assert uid == 2


def test_dovecot_idle_sees_new_mail(dovecot: DovecotServer):
    with dovecot.client() as idler:
        idler.select_folder("INBOX")
        idler.idle()
        try:
            t0 = time.monotonic()
            dovecot.append(make_raw("arrives during IDLE", "<idle@x>"))  # second connection
            seen = []
            while time.monotonic() - t0 < 5 and not any(r[1:2] == (b"EXISTS",) for r in seen):
                seen += idle_responses(idler, timeout=1)
        finally:
            idler.idle_done()
        assert (1, b"EXISTS") in seen, seen
        assert time.monotonic() - t0 < 5
        assert idler.search("ALL") == [1]


def test_dovecot_instances_are_independent_and_restartable(dovecot: DovecotServer):
    other = DovecotServer(username="helpdesk")
    with other:
        assert other.port != dovecot.port
        other.append(make_raw())
        with other.client() as c:
            assert c.select_folder("INBOX")[b"EXISTS"] == 1
        with dovecot.client() as c:
            assert c.select_folder("INBOX")[b"EXISTS"] == 0
    assert other.dir is not None and not other.dir.exists()
    # extra users and restart on the same port keep the mail
    pw = dovecot.add_user("second")
    dovecot.append(make_raw(), username="second")
    port = dovecot.port
    dovecot.restart()
    assert dovecot.port == port
    dovecot.stop_keep_data()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((dovecot.host, port), timeout=2).close()
    dovecot.restart()
    with dovecot.client("second", pw) as c:
        assert c.select_folder("INBOX")[b"EXISTS"] == 1


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_select_1(postgres_server: PostgresServer):
    assert postgres_server.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sa.create_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert conn.dialect.driver == "psycopg"
            assert conn.execute(sa.text("SELECT inet_server_addr()::text")).scalar_one().startswith("127.0.0.1")
            assert conn.execute(sa.text("SHOW fsync")).scalar_one() == "off"
    finally:
        engine.dispose()


def test_postgres_databases_are_independent(postgres_server: PostgresServer):
    url_a = postgres_server.create_database()
    url_b = postgres_server.create_database()
    assert url_a != url_b
    eng_a, eng_b = sa.create_engine(url_a), sa.create_engine(url_b)
    try:
        with eng_a.begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_in_a (x int)"))
        assert "only_in_a" in sa.inspect(eng_a).get_table_names()
        assert sa.inspect(eng_b).get_table_names() == []
        # drop works even while a connection is still open
        held = eng_a.connect()
        postgres_server.drop_database(url_a)
        held.invalidate()
        with pytest.raises(sa.exc.OperationalError):
            with sa.create_engine(url_a).connect():
                pass
    finally:
        eng_a.dispose()
        eng_b.dispose()
        postgres_server.drop_database(url_b)


@pytest.mark.parametrize("run", [1, 2])
def test_db_url_is_fresh_and_writable(db_url: str, run: int):
    engine = sa.create_engine(db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []  # run 2 would see run 1's table
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE marker (run integer)"))
            conn.execute(sa.text("INSERT INTO marker VALUES (:r)"), {"r": run})
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT run FROM marker")).scalar_one() == run
        expected = "sqlite" if db_url.startswith("sqlite") else "postgresql"
        assert engine.dialect.name == expected
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- SMTP


def _email(subject: str = "Ticket #1 received") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "support@vendor.example"
    msg["To"] = "alice@customer.example"
    msg["Subject"] = subject
    msg.set_content("We got it.\n")
    return msg


def _send(sink: SmtpSink, msg: EmailMessage, **kw):
    return asyncio.run(aiosmtplib.send(msg, hostname=sink.host, port=sink.port, timeout=5, **kw))


def test_smtp_sink_records_messages(smtp_sink: SmtpSink):
    assert smtp_sink.host == "127.0.0.1" and smtp_sink.port > 0
    _send(smtp_sink, _email(), recipients=["alice@customer.example", "bob@customer.example"])
    [m] = smtp_sink.wait_for(1)
    assert m.mail_from == "support@vendor.example"
    assert m.rcpt_tos == ("alice@customer.example", "bob@customer.example")
    assert b"Subject: Ticket #1 received" in m.data
    assert m.message["Subject"] == "Ticket #1 received"
    assert m.message.get_content().strip() == "We got it."


def test_smtp_sink_refuse_accept_stop_start(smtp_sink: SmtpSink):
    smtp_sink.refuse(451)
    with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
        _send(smtp_sink, _email("refused"))
    assert exc.value.code == 451
    assert smtp_sink.messages == [] and smtp_sink.refused_count == 1

    smtp_sink.refuse(450, stage="rcpt")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc2:
        _send(smtp_sink, _email("refused at rcpt"))
    assert exc2.value.recipients[0].code == 450

    smtp_sink.accept()
    _send(smtp_sink, _email("accepted"))
    assert [m.message["Subject"] for m in smtp_sink.messages] == ["accepted"]

    port = smtp_sink.port
    smtp_sink.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((smtp_sink.host, port), timeout=2).close()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        _send(smtp_sink, _email("while down"))

    smtp_sink.start()
    assert smtp_sink.port == port
    _send(smtp_sink, _email("after restart"))
    assert [m.message["Subject"] for m in smtp_sink.messages] == ["accepted", "after restart"]
