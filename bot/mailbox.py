"""The IMAP edge (imapclient). Everything after it is pure and tested with .eml files.

- UIDs only, never sequence numbers (RFC 3501 §2.3.1.1); UIDVALIDITY is reported so the store
  can notice a rebuilt mailbox.
- Bodies are read with BODY.PEEK[] so agents still see unread mail as unread.
- A mail is marked processed (a keyword, RFC 3501 §2.3.2, or MOVE, RFC 6851) only after the
  caller has committed it. Nothing is ever deleted or expunged.
- IDLE (RFC 2177) when the server offers it, polling otherwise.
"""

from __future__ import annotations

import logging
import select
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import _parse_untagged_response

from bot.transport import tls_context

log = logging.getLogger(__name__)
_IMAPLIB_LOG = logging.getLogger("imapclient.imaplib")  # where IMAPClient sends imaplib's debug output

MAX_FETCH_BYTES = 20 * 1024 * 1024  # per FETCH round trip: bounds memory with huge mails
IDLE_CYCLE_SECONDS = 300  # IDLE is re-issued this often: well under RFC 2177's 29 minutes
IDLE_LINE_SECONDS = 30  # a server that has begun a line during IDLE finishes it within this


class MailboxError(Exception):
    """The mailbox cannot be used as configured (a clear message for the operator)."""


@dataclass(frozen=True)
class FetchedMail:
    uid: int
    internaldate: datetime  # aware, UTC: when the mail reached the mailbox
    raw: bytes


class Mailbox:
    def __init__(self, imap) -> None:
        self.settings = imap
        self.client: IMAPClient | None = None
        self.uidvalidity = 0
        self._uidnext: int | None = None

    def connect(self) -> None:
        s = self.settings
        secure = s.security != "plain"
        context = tls_context(s.tls_verify, s.ca_file) if secure else None
        try:
            client = IMAPClient(s.host, port=s.port, ssl=s.security == "tls", ssl_context=context,
                                timeout=s.timeout)
            if s.security == "starttls":
                client.starttls(context)
        except ssl.SSLCertVerificationError as error:
            raise MailboxError(f"IMAP {s.host}:{s.port}: certificate verify failed: "
                               f"{error.verify_message or error}; set [imap] ca_file to the server's "
                               "CA (or, knowingly, tls_verify = false)") from error
        client.normalise_times = False
        _quiet_imaplib(client)
        client.login(s.username, s.password)
        self.client = client
        self._check_marking()

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.logout()
            except (IMAPClientError, OSError):
                pass
            self.client = None

    def _check_marking(self) -> None:
        s = self.settings
        if s.mark == "move":
            if not self.client.has_capability("MOVE"):
                raise MailboxError(f"{s.host} does not support MOVE; set [imap] mark = \"flag\"")
            if not self.client.folder_exists(s.processed_folder):
                self.client.create_folder(s.processed_folder)

    def open_inbox(self) -> int:
        s = self.settings
        info = self.client.select_folder(s.inbox)
        self.uidvalidity = int(info[b"UIDVALIDITY"])
        self._uidnext = info.get(b"UIDNEXT")
        permanent = info.get(b"PERMANENTFLAGS", ())
        if s.mark == "flag" and permanent and b"\\*" not in permanent \
                and s.processed_keyword.encode() not in permanent:
            raise MailboxError(f"{s.host} does not allow the keyword {s.processed_keyword} in "
                               f"{s.inbox}; set [imap] mark = \"move\"")
        return self.uidvalidity

    def pending_uids(self) -> list[int]:
        """UIDs of mails not yet marked processed, oldest first."""
        criteria = ["ALL"] if self.settings.mark == "move" else ["UNKEYWORD", self.settings.processed_keyword]
        return sorted(self.client.search(criteria))

    def fetch_chunks(self, uids: list[int]) -> Iterator[list[FetchedMail]]:
        """Yield the mails in chunks whose total size stays under MAX_FETCH_BYTES."""
        sizes = self.client.fetch(uids, ["RFC822.SIZE"])
        for chunk in _chunks(uids, {uid: data.get(b"RFC822.SIZE", 0) for uid, data in sizes.items()}):
            response = self.client.fetch(chunk, ["INTERNALDATE", "BODY.PEEK[]"])
            mails = [FetchedMail(uid, _utc(response[uid][b"INTERNALDATE"]), response[uid][b"BODY[]"])
                     for uid in chunk if b"BODY[]" in response.get(uid, {})]
            if len(mails) < len(chunk):
                log.warning("%d mail(s) vanished before they could be read", len(chunk) - len(mails))
            if mails:
                yield mails

    def mark_processed(self, uids: list[int]) -> None:
        if not uids:
            return
        if self.settings.mark == "move":
            self.client.move(uids, self.settings.processed_folder)
        else:
            self.client.add_flags(uids, [self.settings.processed_keyword], silent=True)

    def wait_for_mail(self, timeout: float, stop: threading.Event) -> None:
        """Return when new mail may have arrived, `timeout` passed, or `stop` is set.

        Mail that arrives while a batch is read is announced in the middle of another
        command's response, where it is easy to miss; so UIDNEXT is compared with the one
        seen when the batch began before going idle.
        """
        if not (self.settings.idle and self.client.has_capability("IDLE")):
            stop.wait(timeout)
            return
        if self._arrived_since_open():
            return
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            if self._idle_cycle(min(deadline, time.monotonic() + IDLE_CYCLE_SECONDS), stop):
                return

    def _arrived_since_open(self) -> bool:
        seen, self._uidnext = self._uidnext, self.client.select_folder(self.settings.inbox).get(b"UIDNEXT")
        return seen is None or seen != self._uidnext

    def _idle_cycle(self, until: float, stop: threading.Event) -> bool:
        self.client.idle()
        try:
            while not stop.is_set() and time.monotonic() < until:
                if any(_is_new_mail(r) for r in idle_responses(self.client, timeout=1)):
                    return True
        finally:
            buffered = self.client.idle_done()[1]
        return any(_is_new_mail(r) for r in buffered)


def _quiet_imaplib(client: IMAPClient) -> None:
    """IMAPClient turns imaplib's debug output up to level 5 and sends it to its
    "imapclient.imaplib" logger at DEBUG, so that imaplib formats the repr of every mail it
    reads, and then of the whole FETCH response, for a logger that almost always drops it:
    half the CPU time of a FETCH. Unless that logger would show it, imaplib stays quiet."""
    if not _IMAPLIB_LOG.isEnabledFor(logging.DEBUG):
        client._imap.debug = 0  # imaplib's own switch: IMAPClient has no public one


def idle_responses(client: IMAPClient, timeout: float) -> list[tuple]:
    """The untagged responses the server sends during IDLE within `timeout` seconds.

    Replaces IMAPClient.idle_check, which reads from a non-blocking socket and fails on half
    a line when a server writes one in two packets (mjs/imapclient#519): here a line, once
    begun, is read to its end. Data already in the read buffer (a notice that came with
    "+ idling") counts as ready, which select() on the socket alone would miss.
    """
    sock = client.socket()
    reader = client._imap  # imaplib's line reader: IMAPClient has no public one
    saved = sock.gettimeout()
    responses = []
    try:
        ready = _buffered(reader.file, sock) or select.select([sock], [], [], timeout)[0]
        sock.settimeout(IDLE_LINE_SECONDS)
        while ready:
            responses.append(_parse_untagged_response(reader._get_line()))
            ready = _buffered(reader.file, sock)
    finally:
        sock.settimeout(saved)
    return responses


def _buffered(file, sock) -> bool:
    """True when a read would not block: bytes in the reader's or the TLS layer's buffer."""
    saved = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(file.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(saved)


def _is_new_mail(response) -> bool:
    return len(response) > 1 and response[1] in (b"EXISTS", b"RECENT")


def _chunks(uids: list[int], sizes: dict[int, int]) -> Iterator[list[int]]:
    chunk, total = [], 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if chunk and total + size > MAX_FETCH_BYTES:
            yield chunk
            chunk, total = [], 0
        chunk.append(uid)
        total += size
    if chunk:
        yield chunk


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # a server that omits the zone: RFC 3501 requires one; assume UTC
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
