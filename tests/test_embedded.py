"""The demo's embedded mail servers, exercised with the client libraries the bot uses.

No mocks: every test talks to a real pymap / aiosmtpd listener on 127.0.0.1 through
imapclient or aiosmtplib, and checks the IMAP behaviour the bot relies on (INTERNALDATE
as the SLA start, UIDVALIDITY + UID ranges for resuming, a custom keyword for "done",
MOVE, IDLE, BODY.PEEK not marking mail read).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import gc
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import aiosmtplib
import imapclient
import pytest
from imapclient import IMAPClient

from bot.embedded import CaptureSmtp, EmbeddedImap
from bot.mailbox import idle_responses

KEYWORD = b"$SupportbotProcessed"
CEST = timezone(timedelta(hours=2))


def make_raw(subject: str = "Printer on fire",
             msgid: str | None = "<m1@customer.example>") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@customer.example>"
    msg["To"] = "support@vendor.example"
    msg["Subject"] = subject
    if msgid is not None:
        msg["Message-ID"] = msgid
    msg["Date"] = "Mon, 06 May 2024 09:08:07 +0200"
    msg.set_content("Hello,\nit is on fire.\n")
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF, as it would arrive


def connect(server: EmbeddedImap) -> IMAPClient:
    client = IMAPClient(server.host, server.port, ssl=False, timeout=10)
    client.normalise_times = False  # keep INTERNALDATE's offset: we compare instants
    client.login(server.username, server.password)
    return client


@pytest.fixture
def imap():
    with EmbeddedImap(folders=("Processed",)) as server:
        yield server


@pytest.fixture
def client(imap):
    c = connect(imap)
    yield c
    try:
        c.logout()
    except (imapclient.exceptions.IMAPClientError, OSError):
        pass


def test_login_capabilities_and_empty_inbox(imap, client):
    caps = set(client.capabilities())
    assert {b"IMAP4REV1", b"IDLE", b"MOVE", b"UIDPLUS"} <= caps
    folders = {name for _, _, name in client.list_folders()}
    assert folders == {"INBOX", "Processed"}
    assert client.select_folder("INBOX")[b"EXISTS"] == 0  # no pymap demo data

    bad = IMAPClient(imap.host, imap.port, ssl=False, timeout=10)
    with pytest.raises(imapclient.exceptions.LoginError):
        bad.login(imap.username, imap.password + "x")
    bad.shutdown()


def test_append_with_internaldate_round_trips_bytes_and_instant(imap, client):
    raw = make_raw()
    when = datetime(2024, 5, 6, 9, 8, 7, tzinfo=CEST)
    client.append("INBOX", raw, msg_time=when)  # IMAP APPEND, explicit date
    imap.append(make_raw("Second", "<m2@customer.example>"),
                internaldate=datetime(2024, 5, 6, 7, 30, 0, 987654, tzinfo=timezone.utc))

    client.select_folder("INBOX", readonly=True)
    uids = client.search("ALL")
    got = client.fetch(uids, ["INTERNALDATE", "BODY.PEEK[]", "RFC822.SIZE"])
    first, second = (got[u] for u in sorted(uids))
    assert first[b"BODY[]"] == raw
    assert first[b"RFC822.SIZE"] == len(raw)
    assert first[b"INTERNALDATE"] == when
    assert first[b"INTERNALDATE"].utcoffset() == timedelta(hours=2)
    # The backend path: same instant, only cut to the whole second IMAP can express.
    assert second[b"INTERNALDATE"] == datetime(2024, 5, 6, 7, 30, 0, tzinfo=timezone.utc)
    assert email.message_from_bytes(second[b"BODY[]"])["Subject"] == "Second"

    with pytest.raises(ValueError):
        imap.append(raw, internaldate=datetime(2024, 5, 6, 9, 0))  # naive


def test_uidvalidity_and_uid_range_search(imap, client):
    for i in range(3):
        imap.append(make_raw(f"n{i}", f"<n{i}@x>"))
    info = client.select_folder("INBOX")
    validity = info[b"UIDVALIDITY"]
    assert isinstance(validity, int) and validity > 0
    uids = sorted(client.search("ALL"))
    assert info[b"UIDNEXT"] == uids[-1] + 1
    assert client.search(["UID", f"{uids[1]}:*"]) == uids[1:]
    # RFC 3501: "*" is the highest UID, so a range starting past it still matches the
    # last message. A resuming poller must filter uid > last_seen itself.
    assert client.search(["UID", f"{uids[-1] + 5}:*"]) == [uids[-1]]
    assert client.select_folder("INBOX")[b"UIDVALIDITY"] == validity  # stable


def test_custom_keyword_persists_and_unkeyword_search_excludes_it(imap, client):
    for i in range(2):
        imap.append(make_raw(f"k{i}", f"<k{i}@x>"))
    info = client.select_folder("INBOX")
    assert b"\\*" in info[b"PERMANENTFLAGS"]
    done, todo = sorted(client.search("ALL"))
    assert client.search(["UNKEYWORD", KEYWORD]) == [done, todo]
    client.add_flags([done], [KEYWORD])
    assert client.search(["UNKEYWORD", KEYWORD]) == [todo]
    assert client.search(["KEYWORD", KEYWORD]) == [done]

    other = connect(imap)  # persisted server-side, not a session flag
    other.select_folder("INBOX")
    assert KEYWORD in other.get_flags([done])[done]
    assert other.search(["UNKEYWORD", KEYWORD]) == [todo]
    other.logout()


def test_move_keeps_message_keyword_and_internaldate(imap, client):
    when = datetime(2024, 5, 6, 9, 8, 7, tzinfo=timezone.utc)
    imap.append(make_raw(), internaldate=when)
    imap.append(make_raw("stays", "<stays@x>"))
    client.select_folder("INBOX")
    moving, staying = sorted(client.search("ALL"))
    client.add_flags([moving], [KEYWORD])
    assert client.has_capability("MOVE")
    client.move([moving], "Processed")
    assert client.search("ALL") == [staying]

    client.create_folder("Archive")  # folders the bot creates itself keep keywords too
    client.copy([staying], "Archive")
    assert client.search("ALL") == [staying]

    client.select_folder("Processed")
    [uid] = client.search(["KEYWORD", KEYWORD])
    got = client.fetch([uid], ["INTERNALDATE", "BODY.PEEK[]"])[uid]
    assert got[b"INTERNALDATE"] == when
    assert got[b"BODY[]"] == make_raw()

    client.select_folder("Archive")
    [uid] = client.search("ALL")
    client.add_flags([uid], [KEYWORD])
    assert client.search(["UNKEYWORD", KEYWORD]) == []


@pytest.mark.parametrize("via", ["imap_append", "embedded_append"])
def test_idle_sees_new_mail_from_elsewhere(imap, client, via):
    assert client.has_capability("IDLE")
    client.select_folder("INBOX")
    client.idle()
    try:
        if via == "imap_append":
            other = connect(imap)
            other.append("INBOX", make_raw())
            other.logout()
        else:
            imap.append(make_raw())
        deadline = time.monotonic() + 5
        responses: list = []
        while time.monotonic() < deadline and (1, b"EXISTS") not in responses:
            responses += idle_responses(client, timeout=0.5)
    finally:
        client.idle_done()
    assert (1, b"EXISTS") in responses


def test_body_peek_does_not_set_seen(imap, client):
    imap.append(make_raw())
    client.select_folder("INBOX")
    [uid] = client.search("ALL")
    client.fetch([uid], ["BODY.PEEK[]"])
    assert b"\\Seen" not in client.get_flags([uid])[uid]
    assert client.search(["UNSEEN"]) == [uid]
    client.fetch([uid], ["BODY[]"])  # control: the non-peek form does mark it read
    assert b"\\Seen" in client.get_flags([uid])[uid]


def test_two_instances_are_independent():
    with EmbeddedImap() as a, EmbeddedImap("other", "secret") as b:
        assert a.port != b.port
        assert (b.username, b.password) == ("other", "secret")
        a.append(make_raw())
        ca, cb = connect(a), connect(b)
        assert ca.select_folder("INBOX")[b"EXISTS"] == 1
        assert cb.select_folder("INBOX")[b"EXISTS"] == 0
        ca.logout()
        cb.logout()
        wrong = IMAPClient(b.host, b.port, ssl=False, timeout=10)
        with pytest.raises(imapclient.exceptions.LoginError):
            wrong.login(a.username, a.password)
        wrong.shutdown()


def test_stop_is_fast_and_leaves_no_threads_or_pending_tasks(caplog):
    before = set(threading.enumerate())
    caplog.set_level(logging.WARNING, logger="asyncio")
    started = time.monotonic()
    server = EmbeddedImap().start()
    startup = time.monotonic() - started
    # Leave clients connected, one of them idling, as a crashed bot would.
    idler, plain = connect(server), connect(server)
    idler.select_folder("INBOX")
    idler.idle()
    plain.select_folder("INBOX")

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert startup < 2.0
    gc.collect()  # "Task was destroyed but it is pending" is emitted on collection
    assert set(threading.enumerate()) == before
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    with pytest.raises((imapclient.exceptions.IMAPClientError, OSError)):
        plain.noop()  # got BYE / EOF
    server.stop()  # idempotent
    for c in (idler, plain):
        try:
            c.shutdown()
        except OSError:
            pass


def test_capture_smtp_stores_exact_bytes(tmp_path):
    before = set(threading.enumerate())
    raw = make_raw("Re: Printer on fire [#42]", "<reply/42@supportbot>")
    with CaptureSmtp(tmp_path / "outbox") as smtp:
        assert smtp.host == "127.0.0.1" and smtp.port > 0
        asyncio.run(aiosmtplib.send(raw, sender="support@vendor.example",
                                    recipients=["alice@customer.example", "cc@x.example"],
                                    hostname=smtp.host, port=smtp.port, start_tls=False))
        asyncio.run(aiosmtplib.send(make_raw("no id", None), sender="support@vendor.example",
                                    recipients=["alice@customer.example"],
                                    hostname=smtp.host, port=smtp.port, start_tls=False))
        assert len(smtp.messages) == 2
        mail_from, rcpt_tos, got = smtp.messages[0]
        assert mail_from == "support@vendor.example"
        assert rcpt_tos == ["alice@customer.example", "cc@x.example"]
        assert got == raw  # nothing prepended (no X-Peer / X-MailFrom)
    files = sorted(p.name for p in smtp.folder.iterdir())
    assert files == ["0001-reply_42@supportbot.eml", "0002-no-message-id.eml"]
    on_disk = (smtp.folder / files[0]).read_bytes()
    assert on_disk == raw
    parsed = email.message_from_bytes(on_disk)
    assert parsed["Message-ID"] == "<reply/42@supportbot>"
    assert parsed["Subject"] == "Re: Printer on fire [#42]"
    assert set(threading.enumerate()) == before

    with CaptureSmtp(smtp.folder) as again:  # a second demo run appends, never overwrites
        asyncio.run(aiosmtplib.send(raw, sender="a@x", recipients=["b@x"],
                                    hostname=again.host, port=again.port, start_tls=False))
    assert sorted(p.name for p in again.folder.iterdir())[-1] == "0003-reply_42@supportbot.eml"
