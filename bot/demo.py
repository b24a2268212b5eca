"""`supportbot demo`: the real service on embedded IMAP/SMTP servers, with scripted mail.

Nothing is faked past the network edge: mail is APPENDed to a real (in-process) IMAP server,
the service reads it with IDLE, records it in SQLite, and delivers acknowledgements over
SMTP to a capturing server that saves them as .eml files.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

from sqlmodel import Session, select

from bot.clock import VirtualClock
from bot.config import Settings, load_settings
from bot.contracts import import_file
from bot.database import make_engine, upgrade
from bot.embedded import CaptureSmtp, EmbeddedImap
from bot.models import Event, Message, OutboxMail, Ticket
from bot.resources import shipped_dir
from bot.rules import load_rules
from bot.service import Service

START = datetime(2026, 11, 23, 8, 58, tzinfo=timezone.utc)  # a Monday morning
# The Friday evening before Easter Monday 2027 (a French public holiday), two days before
# Paris changes to summer time.
GOOD_FRIDAY_EVENING = datetime(2027, 3, 26, 17, 30, tzinfo=timezone.utc)
WAIT_SECONDS = 20


@dataclass(frozen=True)
class Step:
    minutes: int
    file: str
    note: str
    sender: str = ""  # for 08-request.eml: who writes
    at: datetime | None = None  # when it arrives, if not `minutes` after START


SCRIPT = (
    Step(0, "01-question.eml", "a customer asks for help"),
    Step(2, "02-out-of-office.eml", "an out-of-office reply arrives (RFC 3834)"),
    Step(3, "03-bounce.eml", "a delivery failure report arrives"),
    Step(5, "01-question.eml", "the first mail is delivered again (same Message-ID)"),
    Step(9, "04-french.eml", "a customer writes in French"),
    Step(14, "05-followup.eml", "the first customer answers our acknowledgement"),
    Step(20, "06-no-sender.eml", "a mail with no usable sender"),
    Step(25, "07-injection.eml", "a subject that tries to inject a Bcc header"),
    # One refused request per reason (customers from samples/contracts.yaml).
    Step(31, "08-request.eml", "a colleague of a Kestra customer who is not a registered contact",
         "bob@eu.acme.example"),
    Step(33, "08-request.eml", "a customer whose contract was not renewed", "albert.wesker@umbrella.example"),
    Step(35, "08-request.eml", "a customer whose contract was terminated", "it@hooli.example"),
    Step(37, "08-request.eml", "an Astran customer with an invoice unpaid since its due date",
         "it@vandelay.example"),
    Step(39, "08-request.eml", "a Kestra customer with an invoice unpaid for more than 90 days",
         "sol.roth@soylent.example"),
    Step(41, "08-request.eml", "a customer on a free trial", "it@aperture.example"),
    Step(43, "08-request.eml", "an Astran customer whose unpaid invoice is disputed (still served)",
         "it@cyberdyne.example"),
    Step(44, "08-request.eml", "an Astran customer whose contract takes effect in January", "it@wayne.example"),
    Step(45, "08-request.eml", "a customer on record with no contract yet", "pepper.potts@stark.example"),
    Step(46, "09-german.eml", "a registered contact writes in German (answered in English and French)"),
    # One request per severity, each with the deadline its contract sets.
    Step(50, "10-slow.eml", "an Astran customer: the console is very slow (High: 12 business hours)"),
    Step(52, "11-minor.eml", "a Kestra customer: a minor error with a workaround (Medium: 3 business days)"),
    Step(54, "12-question.eml", "a Kestra customer asks how to configure something (Low: 5 business days)"),
    Step(56, "13-best-effort.eml", "a Kestra customer with Standard Support only: best effort, no deadline"),
    Step(0, "14-friday-kestra.eml", "Friday 18:30 in France, before Easter Monday: Kestra production is down",
         at=GOOD_FRIDAY_EVENING),
    Step(0, "15-friday-astran.eml", "the same evening, Astran is unavailable for another customer",
         at=GOOD_FRIDAY_EVENING + timedelta(minutes=5)),
)


def run_demo(output: Path | None) -> int:
    out = Path(output or tempfile.mkdtemp(prefix="supportbot-demo-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = VirtualClock(START)
    with EmbeddedImap() as imap, CaptureSmtp(out / "sent") as smtp:
        settings = _settings(out, imap, smtp)
        upgrade(settings.database.url)
        report = import_file(make_engine(settings.database.url), shipped_dir("samples") / "contracts.yaml",
                             load_rules(settings.bot.rules_path))
        service = Service(settings, clock)
        service.start()
        try:
            print(f"supportbot demo: IMAP 127.0.0.1:{imap.port}, SMTP 127.0.0.1:{smtp.port}, "
                  f"database {out / 'supportbot.db'}")
            print(f"contracts: samples/contracts.yaml imported ({report})\n")
            for step in SCRIPT:
                _play(step, imap, service, clock)
        finally:
            service.stop()
    _summary(out, smtp)
    return 0


def _settings(out: Path, imap: EmbeddedImap, smtp: CaptureSmtp) -> Settings:
    """Write the demo's supportbot.toml (so `tickets list --config` works afterwards) and load it."""
    config = out / "supportbot.toml"
    config.write_text(DEMO_CONFIG.format(imap=imap, smtp=smtp), encoding="utf-8")
    return load_settings(config, env={"SUPPORTBOT_IMAP_PASSWORD": imap.password})


DEMO_CONFIG = """\
# Written by `supportbot demo`; the embedded servers are gone once the demo ends.
[bot]
support_address = "support@vendor.example"
from_name = "Vendor Support"
instance_name = "demo"
triage_address = "triage@vendor.example"

[imap]
host = "127.0.0.1"
port = {imap.port}
security = "plain"
username = "{imap.username}"
poll_seconds = 1

[smtp]
host = "127.0.0.1"
port = {smtp.port}
security = "plain"

[outbox]
poll_seconds = 0.2
retry_base_seconds = 1

[database]
url = "sqlite:///supportbot.db"
"""


def _play(step: Step, imap: EmbeddedImap, service: Service, clock: VirtualClock) -> None:
    arrival = step.at or START + timedelta(minutes=step.minutes)
    clock.advance(arrival - clock.now())
    raw = _demo_mail(step, clock.now(), _first_ack(service))
    before = _count_events(service)
    imap.append(raw, internaldate=arrival)
    print(f"{_clock(arrival)}  {step.note}")
    _wait(lambda: _count_events(service) > before and _settled(service))
    for line in _consequences(service, before):
        print(f"        → {line}")
    print()


def _demo_mail(step: Step, now: datetime, ack_message_id: str) -> bytes:
    text = resources.files("bot").joinpath("demo_mail", step.file).read_text(encoding="utf-8")
    text = text.replace("{date}", now.strftime("%a, %d %b %Y %H:%M:%S +0000"))
    if step.sender:
        local, _, domain = step.sender.partition("@")
        name = " ".join(part.capitalize() for part in local.replace(".", " ").split())
        for key, value in (("sender_name", name), ("sender", step.sender), ("domain", domain),
                           ("minutes", str(step.minutes)), ("subject", "Workers stopped after the upgrade")):
            text = text.replace("{" + key + "}", value)
    return text.replace("{ack_message_id}", ack_message_id).replace("\n", "\r\n").encode()


def _first_ack(service: Service) -> str:
    with Session(service.engine) as session:
        return session.exec(select(OutboxMail.message_id).order_by(OutboxMail.id)).first() or ""


def _wait(condition) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo service did not process the mail in time")
        time.sleep(0.05)


def _count_events(service: Service) -> int:
    with Session(service.engine) as session:
        return len(session.exec(select(Event.id)).all())


def _settled(service: Service) -> bool:
    with Session(service.engine) as session:
        return session.exec(select(OutboxMail.id).where(OutboxMail.status.in_(("pending", "sending")))).first() is None


def _consequences(service: Service, after: int) -> list[str]:
    with Session(service.engine) as session:
        events = session.exec(select(Event).where(Event.id > after).order_by(Event.id)).all()
        return [_describe(session, e) for e in events]


def _describe(session: Session, event: Event) -> str:
    """One line per audit event; decisions show the reasons recorded on the message."""
    message = session.get(Message, event.message_id) if event.message_id else None
    if message is not None and event.kind != "duplicate":
        ticket = session.get(Ticket, message.ticket_id) if message.ticket_id else None
        where = f" on {ticket.reference}" if ticket else ""
        reasons = "".join(f"\n            · {reason}" for reason in message.reason.split("; "))
        return f"{event.kind.replace('_', ' ')}{where}:{reasons}"
    label = EVENT_LABELS.get(event.kind, event.kind.replace("_", " "))
    return f"{label}: {event.detail}"


EVENT_LABELS = {
    "ticket_created": "ticket opened",
    "mail_queued": "queued in the outbox",
    "mail_sent": "accepted by the SMTP server",
    "duplicate": "already recorded, nothing to do",
}


def _clock(moment: datetime) -> str:
    return moment.strftime("%a %d %b %H:%M UTC")


def _summary(out: Path, smtp: CaptureSmtp) -> None:
    files = sorted((out / "sent").glob("*.eml"))
    print(f"{len(files)} mail(s) accepted by the SMTP server, saved in {out / 'sent'}:")
    for path in files:
        print(f"  {path.name}")
    print(f"\ninspect: supportbot tickets list --config {out / 'supportbot.toml'}")
