"""IDLE reading against a server that writes its lines in pieces.

Real servers may split a response line across TCP packets (pymap does, and TLS records do).
A scripted IMAP server on loopback makes that happen on purpose, so the reader is proven to
wait for the end of a line rather than fail on half of it (mjs/imapclient#519).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from imapclient import IMAPClient

from bot.mailbox import idle_responses


class SplittingServer:
    """Speaks just enough IMAP for IDLE, sending its notices in the given pieces.

    A piece that is None hangs up.
    """

    def __init__(self, pieces: list[bytes | None]) -> None:
        self.pieces = pieces
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()
        self.thread.join(5)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE] scripted\r\n")
            idle_tag = b""
            for line in lines:
                tag, _, command = line.rstrip(b"\r\n").partition(b" ")
                verb = command.split(b" ")[0].upper()
                if verb == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
                elif verb == b"IDLE":
                    idle_tag = tag
                    for piece in self.pieces:
                        if piece is None:
                            return
                        conn.sendall(piece)
                        time.sleep(0.3)
                elif tag.upper() == b"DONE":
                    conn.sendall(idle_tag + b" OK idle done\r\n")
                elif verb == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" BAD unexpected\r\n")


def idle_for(pieces: list[bytes], seconds: float = 3) -> list:
    with SplittingServer(pieces) as server:
        client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=5)
        client.idle()
        seen: list = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (1, b"EXISTS") not in seen:
            seen += idle_responses(client, timeout=0.5)
        client.idle_done()
        client.logout()
        return seen


def test_a_line_split_across_packets_is_read_whole():
    seen = idle_for([b"+ idling\r\n* 1 FETCH (", b"FLAGS ())\r\n* 1 EX", b"ISTS\r\n"])
    assert seen == [(1, b"FETCH", (b"FLAGS", ())), (1, b"EXISTS")]


def test_a_notice_sent_with_the_idling_line_is_not_left_in_the_buffer():
    # "+ idling" and the notice arrive in one packet: select() on the socket sees nothing
    # more, the notice already sits in the reader's buffer
    seen = idle_for([b"+ idling\r\n* 1 EXISTS\r\n"], seconds=1.5)
    assert seen == [(1, b"EXISTS")]


def test_nothing_to_report_returns_empty_after_the_timeout():
    with SplittingServer([b"+ idling\r\n"]) as server:
        client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=5)
        client.idle()
        started = time.monotonic()
        assert idle_responses(client, timeout=0.4) == []
        assert time.monotonic() - started >= 0.4
        client.idle_done()
        client.logout()


def test_a_server_that_hangs_up_during_idle_raises_instead_of_spinning():
    with SplittingServer([b"+ idling\r\n", None]) as server:
        client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=5)
        client.idle()
        with pytest.raises(IMAPClient.AbortError, match="EOF"):
            for _ in range(10):
                idle_responses(client, timeout=0.5)


def test_imaplib_debug_output_is_formatted_only_for_a_logger_that_shows_it(tmp_path, dovecot, caplog):
    from bot.mailbox import Mailbox
    from helpers import settings_for, write_config

    settings = settings_for(write_config(tmp_path, dovecot, None, "sqlite://"), dovecot).imap
    quiet = Mailbox(settings)
    quiet.connect()
    try:
        assert quiet.client._imap.debug == 0  # no repr of every mail for nobody
    finally:
        quiet.close()
    caplog.set_level(logging.DEBUG, logger="imapclient.imaplib")
    verbose = Mailbox(settings)
    verbose.connect()
    try:
        verbose.open_inbox()
    finally:
        verbose.close()
    assert any("SELECT" in record.getMessage() for record in caplog.records if record.name == "imapclient.imaplib")
