"""TLS against real servers: certificates are verified by default, for IMAP and SMTP.

A throw-away CA (openssl CLI) signs server certificates; Dovecot offers implicit TLS
(imaps, ``tls_port``) and STARTTLS (``port``), aiosmtpd implicit TLS or required STARTTLS.
Everything goes through the bot's own code: Mailbox, SmtpTransport, `supportbot run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import ssl
import threading
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient.exceptions import IMAPClientError

from bot.mailbox import Mailbox, MailboxError
from bot.transport import ConnectionLost, SmtpTransport
from helpers import running, settings_for, write_config
from servers import DovecotServer, ServerNotInstalled, SmtpSink, TlsCert, make_tls_cert

RAW = (b"From: Alice <alice@customer.example>\r\nTo: support@vendor.example\r\n"
       b"Subject: Printer on fire\r\nMessage-ID: <tls-1@customer.example>\r\n"
       b"Date: Mon, 03 Mar 2025 09:15:00 +0100\r\n\r\nIt is really on fire.\r\n")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def certs() -> Iterator[dict[str, TlsCert]]:
    """One CA and three server certificates it signed, by the names in their subjectAltName."""
    folder = Path(tempfile.mkdtemp(prefix="supportbot-tls-"))
    os.chmod(folder, 0o755)  # Dovecot's unprivileged processes may need to reach it
    try:
        main = make_tls_cert(folder, ("127.0.0.1", "localhost"))
        yield {
            "main": main,
            "localhost-only": make_tls_cert(folder, ("localhost",), ca=main, prefix="localhost"),
            "other-name": make_tls_cert(folder, ("mail.example",), ca=main, prefix="other"),
        }
    except ServerNotInstalled as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def tls_server(cert: TlsCert) -> Iterator[DovecotServer]:
    yield from running(DovecotServer(tls=cert))


@pytest.fixture
def tls_dovecot(certs) -> Iterator[DovecotServer]:
    """Dovecot with the certificate for 127.0.0.1 and localhost; one mail in INBOX."""
    with tls_server(certs["main"]) as server:
        server.append(RAW)
        yield server


def imap_settings(tmp_path: Path, dovecot: DovecotServer, **imap):
    imap = {"host": "127.0.0.1", "security": "tls", "port": dovecot.tls_port, **imap}
    path = write_config(tmp_path, dovecot, None, f"sqlite:///{tmp_path / 'db.sqlite'}", imap=imap)
    return settings_for(path, dovecot).imap


def connected(settings) -> Mailbox:
    mailbox = Mailbox(settings)
    mailbox.connect()
    return mailbox


def assert_reads_inbox(mailbox: Mailbox) -> None:
    try:
        sock = mailbox.client.socket()
        assert isinstance(sock, ssl.SSLSocket) and sock.version().startswith("TLSv1.")
        assert mailbox.open_inbox() > 0
        assert mailbox.pending_uids() == [1]
        [[mail]] = list(mailbox.fetch_chunks([1]))
        assert b"Printer on fire" in mail.raw
    finally:
        mailbox.close()


def assert_verify_failed(error: BaseException, reason: str = "") -> None:
    """The bot names the server and the fix, keeping the TLS error as the cause."""
    assert isinstance(error, MailboxError) and "ca_file" in str(error), repr(error)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError), repr(error.__cause__)
    assert "certificate verify failed" in str(error), str(error)
    assert reason in str(error), str(error)


# --------------------------------------------------------------------------- IMAP


def test_imaps_without_ca_fails_certificate_verification(tmp_path, tls_dovecot):
    settings = imap_settings(tmp_path, tls_dovecot)
    assert settings.tls_verify is True and settings.ca_file is None  # the defaults
    with pytest.raises(MailboxError) as caught:
        connected(settings)
    assert_verify_failed(caught.value, "unable to get local issuer certificate")


def test_imaps_with_ca_file_connects_and_reads(tmp_path, tls_dovecot, certs):
    settings = imap_settings(tmp_path, tls_dovecot, ca_file=str(certs["main"].ca_file))
    assert_reads_inbox(connected(settings))


def test_starttls_with_ca_file_connects_and_reads(tmp_path, tls_dovecot, certs):
    settings = imap_settings(tmp_path, tls_dovecot, security="starttls", port=tls_dovecot.port,
                             ca_file=str(certs["main"].ca_file))
    assert_reads_inbox(connected(settings))


def test_idle_over_tls_wakes_on_new_mail(tmp_path, tls_dovecot, certs):
    """Over TLS, a notice can sit decrypted in the TLS layer where select() cannot see it."""
    mailbox = connected(imap_settings(tmp_path, tls_dovecot, ca_file=str(certs["main"].ca_file)))
    try:
        mailbox.open_inbox()
        mailbox.wait_for_mail(0.1, threading.Event())  # notes UIDNEXT; nothing new yet
        later = threading.Timer(0.5, tls_dovecot.append, [RAW])
        later.start()
        started = time.monotonic()
        mailbox.wait_for_mail(60, threading.Event())
        later.join()
        assert time.monotonic() - started < 30, "woken by the timeout, not by the mail"
        assert mailbox.pending_uids() == [1, 2]
    finally:
        mailbox.close()


def test_starttls_without_ca_fails_certificate_verification(tmp_path, tls_dovecot):
    settings = imap_settings(tmp_path, tls_dovecot, security="starttls", port=tls_dovecot.port)
    with pytest.raises(MailboxError) as caught:
        connected(settings)
    assert_verify_failed(caught.value, "unable to get local issuer certificate")


def test_starttls_refuses_a_server_without_starttls(tmp_path, dovecot):
    """No silent downgrade: the password is never sent in clear when STARTTLS is missing."""
    settings = imap_settings(tmp_path, dovecot, security="starttls", port=dovecot.port)
    with pytest.raises(IMAPClientError, match="STARTTLS"):
        connected(settings)
    assert "Login: user=" not in dovecot.log_path.read_text()


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_verify_false_accepts_the_self_signed_server(tmp_path, tls_dovecot, security):
    port = tls_dovecot.tls_port if security == "tls" else tls_dovecot.port
    settings = imap_settings(tmp_path, tls_dovecot, security=security, port=port, tls_verify=False)
    assert_reads_inbox(connected(settings))


@pytest.mark.parametrize("cert, host, reason", [
    ("localhost-only", "127.0.0.1", "IP address mismatch"),
    ("other-name", "localhost", "Hostname mismatch"),
    ("other-name", "127.0.0.1", "IP address mismatch"),
])
@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_certificate_for_another_name_fails(tmp_path, certs, cert, host, reason, security):
    """The CA is trusted, but the certificate does not name the host we connected to."""
    with tls_server(certs[cert]) as server:
        port = server.tls_port if security == "tls" else server.port
        settings = imap_settings(tmp_path, server, host=host, security=security, port=port,
                                 ca_file=str(certs[cert].ca_file))
        with pytest.raises(MailboxError) as caught:
            connected(settings)
        assert_verify_failed(caught.value, reason)


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_certificate_naming_the_host_is_accepted(tmp_path, certs, security):
    """The counterpart: the localhost-only certificate is fine when connecting to localhost."""
    with tls_server(certs["localhost-only"]) as server:
        server.append(RAW)
        port = server.tls_port if security == "tls" else server.port
        settings = imap_settings(tmp_path, server, host="localhost", security=security, port=port,
                                 ca_file=str(certs["main"].ca_file))
        assert_reads_inbox(connected(settings))


# --------------------------------------------------------------------------- SMTP


@pytest.fixture(params=["tls", "starttls"])
def tls_sink(request, certs) -> Iterator[SmtpSink]:
    sink = SmtpSink(tls=certs["main"], tls_mode=request.param)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


def send(transport: SmtpTransport) -> None:
    async def main():
        async with transport.open() as channel:
            await channel.send("support@vendor.example", ["alice@customer.example"], RAW)
    asyncio.run(main())


def test_smtp_with_ca_file_delivers(tls_sink, certs):
    send(SmtpTransport("127.0.0.1", tls_sink.port, tls_sink.tls_mode, timeout=10,
                       ca_file=certs["main"].ca_file))
    [message] = tls_sink.wait_for(1)
    assert message.rcpt_tos == ("alice@customer.example",) and message.data.startswith(b"From: Alice")


def test_smtp_without_ca_fails_certificate_verification(tls_sink):
    with pytest.raises(ConnectionLost) as caught:
        send(SmtpTransport("127.0.0.1", tls_sink.port, tls_sink.tls_mode, timeout=10))
    assert "certificate verify failed" in str(caught.value), str(caught.value)
    time.sleep(0.1)
    assert tls_sink.messages == []


def test_smtp_hostname_mismatch_fails(certs):
    with SmtpSink(tls=certs["localhost-only"], tls_mode="tls") as sink:
        with pytest.raises(ConnectionLost) as caught:
            send(SmtpTransport("127.0.0.1", sink.port, "tls", timeout=10,
                               ca_file=certs["main"].ca_file))
        assert "IP address mismatch" in str(caught.value), str(caught.value)
        assert sink.messages == []


def test_smtp_tls_verify_false_delivers(tls_sink):
    send(SmtpTransport("127.0.0.1", tls_sink.port, tls_sink.tls_mode, timeout=10, tls_verify=False))
    assert len(tls_sink.wait_for(1)) == 1


def test_smtp_starttls_refuses_a_server_without_starttls(smtp_sink):
    """No silent downgrade to clear text when the server does not offer STARTTLS."""
    with pytest.raises(ConnectionLost, match="STARTTLS"):
        send(SmtpTransport("127.0.0.1", smtp_sink.port, "starttls", timeout=10))
    assert smtp_sink.messages == []


# --------------------------------------------------------------------------- supportbot run


def supportbot(*args: str, env: dict, **kwargs):
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=120, **kwargs)


def run_config(tmp_path: Path, dovecot: DovecotServer, **imap) -> Path:
    config = write_config(tmp_path, dovecot, None, f"sqlite:///{tmp_path / 'db.sqlite'}",
                          imap={"security": "tls", "port": dovecot.tls_port, **imap})
    env = {"SUPPORTBOT_IMAP_PASSWORD": dovecot.password}
    upgraded = supportbot("db", "upgrade", "--config", str(config), env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    return config


def test_run_without_ca_file_stops_with_a_one_line_certificate_error(tmp_path, tls_dovecot):
    config = run_config(tmp_path, tls_dovecot)
    logins = tls_dovecot.log_path.read_text().count("Login: user=")  # the fixture's APPEND
    result = supportbot("run", "--config", str(config),
                        env={"SUPPORTBOT_IMAP_PASSWORD": tls_dovecot.password})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("supportbot: error:")]
    assert len(errors) == 1, result.stderr
    assert "certificate verify failed" in errors[0], result.stderr
    assert tls_dovecot.log_path.read_text().count("Login: user=") == logins


def test_run_with_ca_file_starts_and_stops_cleanly(tmp_path, tls_dovecot, certs):
    config = run_config(tmp_path, tls_dovecot, ca_file=str(certs["main"].ca_file))
    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--role", "ingest",
                                 "--config", str(config)],
                                env=dict(os.environ, SUPPORTBOT_IMAP_PASSWORD=tls_dovecot.password),
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while "supportbot started" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()
    assert re.search(r"Login: user=<support>, .*, TLS, ", tls_dovecot.log_path.read_text())
