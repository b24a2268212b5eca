"""The running service: an ingest thread (IDLE or polling) and APScheduler jobs.

Start-up checks everything it can (schema, rules, mailbox login) and fails with a clear
message; afterwards, network trouble is retried with back-off and never ends the process.
SIGTERM/SIGINT stop it cleanly: the current mail finishes, nothing half-done is marked.

The delivery role sends mail that ingest rendered and queued: it imports and loads nothing
of the ingest side (rules, templates, parser, IMAP), which keeps its process 17 MB smaller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from datetime import datetime, timezone

from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import OperationalError

from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.database import make_engine, require_current_schema
from bot.outbox import Outbox, RetryPolicy
from bot.transport import FolderTransport, SmtpTransport, Transport

if TYPE_CHECKING:
    from bot import decide as d

log = logging.getLogger(__name__)

MAX_RECONNECT_SECONDS = 300


def decision_policy(settings: Settings, rules=None) -> d.Policy:
    from bot import decide as d
    from bot.rules import load_rules
    b = settings.bot
    return d.Policy(support_address=b.support_address, message_id_domain=b.message_id_domain,
                    reference_prefix=b.reference_prefix, default_language=b.default_language,
                    ack_rate_limit_per_hour=b.ack_rate_limit_per_hour,
                    triage_notices_per_hour=b.triage_notices_per_hour,
                    rules=rules or load_rules(b.rules_path), triage_address=b.triage_address,
                    authserv_id=b.authserv_id if b.require_authenticated_sender else None)


def make_transport(settings: Settings) -> Transport:
    if settings.outbox.transport == "folder":
        return FolderTransport(settings.outbox.capture_dir)
    s = settings.smtp
    return SmtpTransport(s.host, s.port, s.security, s.username, s.password, s.timeout,
                         s.tls_verify, s.ca_file)


ROLES = ("all", "ingest", "deliver")


class Service:
    """`role` picks the jobs: both (the default), or one of them, so that ingest and delivery
    can run as two processes (each on its own core) against one database. `wake_fd` joins
    such a pair (bot/supervise.py): ingest writes a byte to it when it queued mail, delivery
    reads it and sends at once."""

    def __init__(self, settings: Settings, clock: Clock | None = None, role: str = "all",
                 wake_fd: int | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        self.role = role
        self.wake_fd = wake_fd
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine = make_engine(settings.database.url)
        self.stop_event = threading.Event()
        self._delivering = threading.Lock()
        self._deliver_again = threading.Event()
        b, o = settings.bot, settings.outbox
        self.outbox = Outbox(self.engine, self.clock, make_transport(settings), b.instance_name,
                             b.support_address,
                             RetryPolicy(o.max_attempts, o.retry_base_seconds, o.retry_max_seconds),
                             o.redirect_all_to, o.batch_size, o.connections)
        self.mailbox = self.ingestor = self.worker = None
        if role in ("all", "ingest"):
            self._set_up_ingest()
        self.scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._ingest_thread = threading.Thread(target=self._ingest_loop, name="ingest", daemon=True)

    def _set_up_ingest(self) -> None:
        """Rules and templates are loaded and checked here, so a broken one stops start-up."""
        from bot.ingest import Ingestor
        from bot.mailbox import Mailbox
        from bot.rules import load_rules
        from bot.store import Sender, Store
        from bot.templating import Templates
        from bot.textworker import TextWorker
        b = self.settings.bot
        self.rules = load_rules(b.rules_path)
        templates = Templates(b.templates_path)
        templates.check()
        self.store = Store(self.engine, self.clock, templates,
                           Sender(b.support_address, b.from_name, b.message_id_domain),
                           b.reference_prefix)
        self.worker = TextWorker(self.rules.severity)
        self.ingestor = Ingestor(self.store, decision_policy(self.settings, self.rules), self.settings.imap.inbox,
                                 self.settings.imap.batch_size, on_queued=self.wake_delivery,
                                 worker=self.worker)
        self.mailbox = Mailbox(self.settings.imap)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Check the schema and the mailbox now, so a misconfiguration fails at start-up."""
        config = self.settings.path or "supportbot.toml"
        require_current_schema(self.engine, f"supportbot db upgrade --config {config}")
        if self.role in ("all", "ingest"):
            self.mailbox.connect()
        if self.role in ("all", "deliver"):
            self.scheduler.add_job(self.deliver_once, "interval", id="deliver",
                                   seconds=self.settings.outbox.poll_seconds, max_instances=2,
                                   coalesce=True, next_run_time=datetime.now(timezone.utc))
            self.scheduler.start()
            if self.wake_fd is not None:
                threading.Thread(target=self._wait_for_wakes, name="wake", daemon=True).start()
        if self.role in ("all", "ingest"):
            self._ingest_thread.start()
        log.info("supportbot started (%s): %s as %s", self.role, self.settings.imap.host,
                 self.settings.imap.username)

    def stop(self) -> None:
        self.stop_event.set()
        if self._ingest_thread.is_alive():
            self._ingest_thread.join()
        if self.worker is not None:
            self.worker.close()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.mailbox is not None:
            self.mailbox.close()
        self.engine.dispose()
        log.info("supportbot stopped")

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_event.set())
        self.start()
        try:
            self.stop_event.wait()
        finally:
            self.stop()

    # -- jobs ---------------------------------------------------------------------------

    def deliver_once(self) -> None:
        """Deliver until nothing is due. A run that starts while another is delivering only
        asks that one to look again, so wake-ups are never lost and never pile up."""
        while self._delivering.acquire(blocking=False):
            try:
                self._deliver_again.clear()
                report = asyncio.run(self.outbox.deliver_due())
                if report.sent or report.failed or report.uncertain:
                    log.info("outbox: %s", report)
            finally:
                self._delivering.release()
            # Checked after the release, while wake_delivery() sets the flag before it looks
            # at the lock: one of the two always sees the other, so no wake-up is lost.
            if not self._deliver_again.is_set() or self.stop_event.is_set():
                return
        self._deliver_again.set()

    def wake_delivery(self) -> None:
        """Have queued mail sent now, by this process or by the delivery process."""
        if self.role == "ingest":
            if self.wake_fd is not None:
                self._wake_other_process()
            return
        self._deliver_again.set()
        if self._delivering.locked():
            return  # the delivery under way will look again
        if self.scheduler.running:
            self.scheduler.modify_job("deliver", next_run_time=datetime.now(timezone.utc))

    def _wake_other_process(self) -> None:
        try:
            os.set_blocking(self.wake_fd, False)
            os.write(self.wake_fd, b"!")
        except BlockingIOError:
            pass  # the pipe is full: delivery has wake-ups waiting already
        except OSError as error:  # delivery is gone; its own polling or the parent takes over
            log.warning("cannot wake the delivery process: %s", error)

    def _wait_for_wakes(self) -> None:
        while not self.stop_event.is_set():
            try:
                if not os.read(self.wake_fd, 512):
                    return  # ingest has ended; the outbox is still polled
            except OSError:
                return
            self.wake_delivery()

    def _ingest_loop(self) -> None:
        from imapclient.exceptions import IMAPClientError
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                if self.mailbox.client is None:
                    self.mailbox.connect()
                report = self.ingestor.drain(self.mailbox, self.stop_event)
                if report.read:
                    log.info("inbox: read %d mail(s) %s", report.read, report.outcomes)
                delay = 1.0
                self.mailbox.wait_for_mail(self.settings.imap.poll_seconds, self.stop_event)
            except (IMAPClientError, OSError, OperationalError) as error:
                log.warning("ingest: %s; retrying in %.0f s", error, delay)
                self.mailbox.close()
                self.stop_event.wait(delay)
                delay = min(delay * 2, MAX_RECONNECT_SECONDS)
