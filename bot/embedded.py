"""In-process mail servers for `supportbot demo` and the tests.

The demo must run the real service loop (IMAP in, SMTP out) on a bare machine, so we
embed both servers on 127.0.0.1 with ephemeral ports:

* `EmbeddedImap` runs pymap's in-memory ``dict`` backend.  pymap is normally started
  by its CLI (``pymap dict ...``, see ``pymap.main``), which parses arguments, builds a
  ``Config`` from them, creates the demo user and runs ``IMAPService.start()`` under
  ``asyncio.run`` until SIGINT.  None of that fits in a library: the CLI binds a fixed
  port and never tells us the port, installs signal handlers and blocks forever.  We
  build the same three objects ourselves (``Config`` -> ``Login`` -> ``IMAPServer``),
  listen with ``asyncio.start_server`` on port 0, and run the loop in a thread.
* `CaptureSmtp` wraps aiosmtpd's threaded ``Controller`` and writes every accepted
  message, byte for byte, to a folder so the operator can open the bot's replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import logging
import os
import re
import secrets
import ssl
import threading
from argparse import Namespace
from datetime import datetime, timezone
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiosmtpd.controller import Controller
from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.dict import Config as _DictConfig
from pymap.backend.dict import Login
from pymap.backend.dict.filter import FilterSet
from pymap.backend.dict.mailbox import MailboxData, MailboxSet
from pymap.concurrent import Subsystem
from pymap.imap import IMAPServer
from pymap.parsing.message import AppendMessage
from pymap.parsing.specials.flag import Flag, Wildcard
from pymap.parsing.specials.objectid import ObjectId
from pymap.user import Passwords, UserMetadata
from pysasl.hashing import Cleartext

__all__ = ["EmbeddedImap", "CaptureSmtp"]

_T = TypeVar("_T")

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


def _quiet_logs(debug: bool, *names: str) -> None:
    """pymap logs every IMAP line (LOGIN passwords included) at DEBUG and aiosmtpd logs
    every SMTP session at INFO; keep them out of the bot's logs unless asked."""
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


class _Config(_DictConfig):
    """The dict backend's config, minus a per-connection `socket.getfqdn()` (which can
    take seconds on a machine with broken DNS) in the greeting."""

    @property
    def greeting(self) -> bytes:
        return b"Server ready (supportbot embedded IMAP)"


class _Mailbox(MailboxData):
    """A dict-backend mailbox that keeps keywords.  Stock pymap only lets the system
    flags persist (PERMANENTFLAGS has no ``\\*``): ``STORE +FLAGS ($SupportbotProcessed)``
    answers OK and the keyword silently vanishes.  The bot marks handled mail with such
    a keyword, so the demo server must behave like Dovecot/Gmail/Exchange here."""

    @property
    def permanent_flags(self) -> frozenset[Flag]:
        return super().permanent_flags | {Wildcard}


class _MailboxSet(MailboxSet):
    """The user's folders, all made of `_Mailbox` (renaming INBOX is not supported)."""

    def __init__(self) -> None:
        super().__init__()
        self._inbox = _Mailbox(self._content_cache, self._thread_cache)

    async def add_mailbox(self, name: str) -> ObjectId:
        mailbox_id = await super().add_mailbox(name)
        self._set[name].__class__ = _Mailbox  # same layout, just the flags property
        return mailbox_id


class EmbeddedImap:
    """pymap's in-memory IMAP server for one user, on 127.0.0.1 without TLS.

    Runs its own event loop in a daemon thread, so it works next to synchronous code
    (imapclient) and next to other event loops.  Use as a context manager or call
    `start()` / `stop()`.  Everything is lost on `stop()`.
    """

    def __init__(self, username: str = "support", password: str | None = None,
                 *, folders: tuple[str, ...] = (), debug: bool = False) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        self._folders = folders
        self._debug = debug
        self._loop: asyncio.AbstractEventLoop | None = None
        self._login: Login | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> EmbeddedImap:
        if self._thread is not None:
            raise RuntimeError("EmbeddedImap already started")
        _quiet_logs(self._debug, "pymap")
        self._thread = threading.Thread(target=self._run, name="embedded-imap", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise TimeoutError("embedded IMAP server did not start")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("embedded IMAP server failed to start") from self._error
        for folder in self._folders:
            self.create_folder(folder)
        return self

    def stop(self) -> None:
        """Close the listener, cancel (and await) every connection task, join the thread.
        Connected clients get ``* BYE`` and then EOF."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(_STOP_TIMEOUT)

    def __enter__(self) -> EmbeddedImap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start() if it happened there
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        # The Namespace only has to satisfy what IMAPConfig reads from it.
        args = Namespace(debug=self._debug, passlib_cfg=None, proxy_protocol=None)
        config = _Config(
            args, host=self.host, port=0, debug=self._debug,
            demo_data=False,  # --demo-data would load pymap's sample mails into INBOX
            demo_user=self.username, demo_password=self.password,
            tls_enabled=False,  # allows LOGIN/AUTHENTICATE PLAIN without STARTTLS
            ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER),  # ignore $CERT_FILE
            # Throwaway local password: no 500,000-round PBKDF2 on every login, and
            # no CPU thread pool to leak.
            hash_context=Cleartext(), cpu_subsystem=Subsystem.for_asyncio(),
        )
        config.apply_context()
        login = Login(config)
        user = UserMetadata(config, self.username,
                            password=await Passwords(config).hash_password(self.password))
        await login.demo_user_identity.set(user)
        # Identity.new_session() uses this cached state instead of creating its own.
        config.set_cache[self.username] = (_MailboxSet(), FilterSet())

        callback = ProxyProtocolReader(config.proxy_protocol).get_callback(
            IMAPServer(login, config))
        server = await asyncio.start_server(callback, host=self.host, port=0)
        self.port = server.sockets[0].getsockname()[1]
        self._login = login
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            me = asyncio.current_task()
            # Connection tasks are fire-and-forget in pymap; awaiting their cancellation
            # here avoids "Task was destroyed but it is pending" at loop close.
            for _ in range(3):  # cancelling may spawn a last write task
                tasks = [t for t in asyncio.all_tasks() if t is not me]
                if not tasks:
                    break
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    # -- mailbox content -------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run `coro` on the server's loop (the backend is not thread-safe) and wait."""
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("EmbeddedImap is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_START_TIMEOUT)

    async def _mailbox_set(self) -> MailboxSet:
        assert self._login is not None
        async with self._login.demo_user_identity.new_session() as session:
            return session.mailbox_set

    def create_folder(self, name: str) -> None:
        """Create a mailbox (e.g. the bot's "Processed" folder); existing is fine."""
        async def create() -> None:
            with contextlib.suppress(ValueError):  # already exists
                await (await self._mailbox_set()).add_mailbox(name)
        self._call(create())

    def append(self, raw: bytes, folder: str = "INBOX",
               internaldate: datetime | None = None) -> None:
        """Deliver `raw` to `folder`, unseen, as an MTA would.

        Goes straight to the backend (no IMAP round trip or login) but through the same
        `MailboxData.append` an IMAP APPEND uses, so IDLE clients are woken.  The bot
        starts the SLA clock from INTERNALDATE, so `internaldate` must be timezone-aware
        and is truncated to whole seconds, which is all IMAP can carry: a later FETCH
        returns exactly the instant stored.  Default: now.
        """
        if internaldate is None:
            internaldate = datetime.now(timezone.utc)
        elif internaldate.tzinfo is None:
            raise ValueError("internaldate must be timezone-aware")
        when = internaldate.replace(microsecond=0)

        async def deliver() -> None:
            mailbox = await (await self._mailbox_set()).get_mailbox(folder)
            await mailbox.append(AppendMessage(bytes(raw), when), recent=True)
        self._call(deliver())


class _Controller(Controller):
    """aiosmtpd's Controller checks it is up by connecting to ``self.port``, which is
    wrong for port 0; point it at the port the kernel actually chose first."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class CaptureSmtp:
    """An SMTP sink on 127.0.0.1 that keeps what the bot sends.

    Each accepted message is written to `folder` as ``NNNN-<message-id>.eml`` (the
    DATA bytes exactly as received: our handler adds no X-Peer/X-MailFrom headers,
    unlike aiosmtpd's stock ``Message`` handler) and appended to `messages` as
    ``(mail_from, rcpt_tos, raw)``.  Numbering continues after files already there, so
    re-running the demo into the same folder overwrites nothing.
    """

    def __init__(self, folder: str | os.PathLike[str], *, debug: bool = False) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.folder = Path(folder)
        self.messages: list[tuple[str, list[str], bytes]] = []
        self._lock = threading.Lock()
        self._debug = debug
        self._controller: _Controller | None = None
        self._count = 0

    def start(self) -> CaptureSmtp:
        _quiet_logs(self._debug, "mail.log", "mail.debug")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count = max((int(p.name[:4]) for p in self.folder.glob("[0-9][0-9][0-9][0-9]-*.eml")),
                          default=0)
        # server_hostname avoids SMTP's default socket.getfqdn() lookup.
        self._controller = _Controller(self, hostname=self.host, port=0,
                                       server_hostname="supportbot-capture")
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> CaptureSmtp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """aiosmtpd hook: runs on the controller's loop thread for each message."""
        raw = bytes(envelope.original_content)
        headers = email.parser.BytesHeaderParser().parsebytes(raw)
        msgid = str(headers.get("Message-ID", "")).strip().strip("<>")
        name = re.sub(r"[^A-Za-z0-9._@+-]", "_", msgid)[:100] or "no-message-id"
        with self._lock:
            self._count += 1
            path = self.folder / f"{self._count:04d}-{name}.eml"
            tmp = path.with_suffix(".eml.tmp")  # readers never see a half-written file
            tmp.write_bytes(raw)
            os.replace(tmp, path)
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), raw))
        return "250 Message accepted for delivery"
