#!/usr/bin/env python3
"""End-to-end ingest benchmark: N customer mails in a private Dovecot → N acknowledgements.

    PYTHONPATH=tests python tests/benchmarks/ingest.py --mails 10000 [--db sqlite|postgresql]

(tests/ is put on sys.path automatically, so PYTHONPATH is optional.)

1. Starts a private Dovecot, an SMTP sink (tests/servers.py) and, for --db postgresql,
   a private PostgreSQL.
2. Appends N realistic customer mails to INBOX with MULTIAPPEND over one connection
   (distinct senders, at most 3 mails each so the ack rate limit never applies; plain,
   multipart/alternative with HTML, quoted replies, small attachments; 2-30 KB). Each mail's
   INTERNALDATE is set explicitly to the wall-clock second of its APPEND.
3. Runs the real service (bot.service.Service) as `supportbot run` does: ingest and
   delivery as two child processes joined by a wake-up pipe (--one-process: both roles in
   one), so that the peak RSS reported (the sum over the processes) is the service's own, until the sink has accepted N acknowledgements and no
   mail is left unmarked; then stops it (SIGTERM-equivalent: Service.stop()).
4. Prints throughput, latency from INTERNALDATE to the sink's acceptance of the ack
   (matched by the ack's In-Reply-To), and the service's peak RSS (VmHWM, summed over
   its processes, the ingest process's text worker included).
5. Runs "the limit": a plain imapclient + aiosmtplib loop that only fetches the same mails
   (UID SEARCH ALL, UID FETCH INTERNALDATE BODY.PEEK[] in batches) and sends one mail per
   fetched mail over one SMTP connection: an acknowledgement as the service would send it
   (our templates and compose(), 2.4 KB and 65 lines, the size of the service's own; the
   SMTP server's work grows with each line), or with --plain-mail small a 0.6 KB one.
   Once before the service and once after (its
   own speed varies by a third from run to run on a shared machine); prints our throughput
   as a fraction of the mean of the two.

Only figures are printed, plus whether each target is met (no asserts). Everything runs on
loopback and is removed at the end. Not a pytest module (tests/benchmarks is not collected).

Options: --batch (IMAP and outbox batch size), --timeout (service-phase bound),
--seed, --profile FILE (.svg/.json/.txt: run the child under `py-spy record`; CPU samples,
add --profile-idle for wall time),
--keep (keep the temp dir with the config, database and child log).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unicodedata
import uuid
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

SUPPORT = "support@vendor.example"
TARGET_FRACTION = 0.50   # of the plain fetch+send loop, at N = 10,000
TARGET_RSS_KB = 200 * 1024
APPEND_BATCH = 100       # mails per MULTIAPPEND command
MAILS_PER_SENDER = 3     # < ack_rate_limit_per_hour (5): every mail gets its ack


# =========================================================================== corpus

FIRST = ("Anna Ben Chloé Daniel Emma François Greta Hugo Ines Jonas Kai Léa Marco Nora Oskar "
         "Paula Quentin Rosa Samir Tanja Ugo Vera William Xavier Yusuf Zoé Aiko Bjørn Carmen "
         "Dmitri Elif Fatima Giulia Hamid Ingrid Jules").split()
LAST = ("Müller Martin Rossi García Smith Dubois Nowak Jansen Silva Novák Kowalski Bernard "
        "Schmidt Fischer Moreau Lefèvre Costa Petit Weber Wagner Becker Roux Lambert Ferreira "
        "Andersen Nielsen O'Brien Yamamoto Tanaka Haddad Okafor Popescu Horvat").split()
DOMAINS = ("acme.example globex.example initech.example umbrella.example hooli.example "
           "stark.example wayne.example tyrell.example cyberdyne.example wonka.example "
           "soylent.example vandelay.example aperture.example").split()
PRODUCTS = ("the dashboard", "the API gateway", "our SSO login", "the nightly export", "the mobile app",
            "the billing portal", "report generation", "the sync agent", "the CSV import",
            "webhook delivery", "the search index", "our staging instance")
PROBLEMS = ("returns HTTP 500", "is very slow since this morning", "times out after 30 seconds",
            "shows an empty page", "rejects valid credentials", "sends duplicate notifications",
            "stopped working after the update", "loses the last row", "crashes on start-up",
            "shows the wrong time zone", "cannot be reached from our VPN", "throws a certificate error")
SUBJECTS = (
    "{product} {problem}", "Urgent: {product} {problem}", "Question about {product}",
    "Problem with {product}", "{product} – ticket for our team", "Help needed: {product}",
    "Invoice question (order {num})", "Licence renewal for {num} seats", "Error {num} in {product}",
    "Re: {product} {problem}", "Demande d'assistance : {product}", "Störung: {product}",
    "Access request for a new colleague", "Feature request: export to PDF",
)
SENTENCES = (
    "Since {day}, {product} {problem} for several of our users.",
    "We already restarted the service and cleared the browser cache, without success.",
    "The problem happens on Windows and on macOS, with Firefox and Chrome.",
    "Could you please have a look at it as soon as possible? Our team depends on it.",
    "I attached the relevant part of the log, the error appears around {time}.",
    "Our contract number is {num}; we are on the premium plan.",
    "Steps to reproduce: log in, open the project overview, click on export, wait.",
    "The same operation worked fine last week, nothing changed on our side as far as I know.",
    "Is there a known issue or a maintenance window we missed?",
    "Please call me back on +41 44 {num} if that is easier.",
    "Nous avons remarqué que {product} ne répond plus depuis ce matin.",
    "Die Fehlermeldung lautet: \"Verbindung zum Server fehlgeschlagen\".",
    "About {num} records are affected, all of them created after the upgrade.",
    "We would also like to know whether the fix will be part of the next release.",
    "Thanks in advance for your help, and sorry for the long mail.",
    "Our IT department confirmed that the firewall rules did not change.",
)
DAYS = ("Monday", "Tuesday", "yesterday", "this morning", "last Friday", "the weekend")
ATTACHMENTS = (("error.log", "text/plain"), ("screenshot.png", "image/png"),
               ("report.pdf", "application/pdf"), ("config.json", "application/json"))


class Corpus:
    """Deterministic realistic customer mails; mail i has Message-ID <bench-i-...@domain>."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.rng = random.Random(seed)
        self.run = uuid.uuid4().hex[:8]
        self.senders = max(1, -(-n // MAILS_PER_SENDER))

    def _fill(self, **extra) -> dict:
        r = self.rng
        values = dict(product=r.choice(PRODUCTS), problem=r.choice(PROBLEMS), day=r.choice(DAYS),
                      num=r.randint(1000, 99999), time=f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}")
        values.update(extra)
        return values

    def _paragraphs(self, size: int, values: dict) -> list[str]:
        r, out, total = self.rng, [], 0
        while total < size:
            para = " ".join(r.choice(SENTENCES).format(**values) for _ in range(r.randint(2, 5)))
            out.append(para)
            total += len(para) + 2
        return out

    def mail(self, i: int, date: datetime) -> tuple[str, bytes]:
        r = self.rng
        s = i % self.senders
        first, last = FIRST[s % len(FIRST)], LAST[(7 * s + s // len(FIRST)) % len(LAST)]
        domain = DOMAINS[(s // 3) % len(DOMAINS)]
        ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
        local = re.sub(r"[^a-z.]", "", ascii_name.lower()) or "user"
        address = f"{local}.{s}@{domain}"
        message_id = f"<bench-{i}-{self.run}@{domain}>"
        values = self._fill()
        subject = r.choice(SUBJECTS).format(**values)
        size = int(2048 * 13 ** r.random())                       # log-uniform, 2-30 KB with HTML/attachments
        reply = r.random() < 0.15
        shape = r.choices(("plain", "alternative", "mixed"), (45, 45, 10))[0]
        headers = [
            ("From", _addr(f"{first} {last}", address)),
            ("To", f"Vendor Support <{SUPPORT}>"),
            ("Subject", _subject(("Re: " if reply and not subject.startswith("Re:") else "") + subject)),
            ("Date", format_datetime(date - timedelta(seconds=r.randint(5, 600)))),
            ("Message-ID", message_id),
            ("MIME-Version", "1.0"),
            ("User-Agent", r.choice(("Mozilla Thunderbird 115.6", "Microsoft Outlook 16.0",
                                     "Apple Mail (2.3731)", "Roundcube Webmail/1.6"))),
        ]
        if r.random() < 0.2:
            headers.append(("Cc", _addr("Team Lead", f"lead.{s}@{domain}")))
        if reply:
            # A reply in a thread the bot never saw (a colleague's mail forwarded to support):
            # exercises the References lookup but still opens a ticket and gets an ack.
            parents = [f"<thread-{i}-{k}-{self.run}@{domain}>" for k in range(r.randint(1, 4))]
            headers += [("In-Reply-To", parents[-1]), ("References", " ".join(parents))]
        attachment = b""
        if shape == "mixed":
            name, ctype = r.choice(ATTACHMENTS)
            attachment_bytes = r.randbytes(r.randint(1024, 8192))
            size = max(2048, size - len(attachment_bytes) * 4 // 3)
            attachment = (f"Content-Type: {ctype}; name=\"{name}\"\r\n"
                          f"Content-Disposition: attachment; filename=\"{name}\"\r\n"
                          f"Content-Transfer-Encoding: base64\r\n\r\n").encode() + \
                base64.encodebytes(attachment_bytes).replace(b"\n", b"\r\n")
        paragraphs = self._paragraphs(size * 10 // 24 if shape != "plain" else size, values)
        greeting = r.choice(("Hello,", "Hi support team,", "Dear Sir or Madam,", "Bonjour,"))
        closing = f"Best regards,\n{first} {last}\n{domain.split('.')[0].title()} IT"
        text = "\n\n".join([greeting, *paragraphs, closing])
        if reply:
            quoted = "\n".join("> " + line for line in textwrap.wrap(
                " ".join(self._paragraphs(r.randint(300, 2000), values)), 72))
            text += f"\n\nOn {format_datetime(date - timedelta(days=1))}, a colleague wrote:\n{quoted}\n"
        text_part = _text_part(text, "plain", qp=r.random() < 0.5)
        if shape == "plain":
            body_headers = text_part[0]
            body = text_part[1]
        else:
            html = "<html><body>" + "".join(f"<p>{_html(p)}</p>" for p in text.split("\n\n")) + "</body></html>"
            html_part = _text_part(html, "html", qp=True)
            alt_boundary = f"=_alt_{i}_{self.run}"
            alternative = _multipart("alternative", alt_boundary, [_part(*text_part), _part(*html_part)])
            if shape == "alternative":
                body_headers, body = alternative
            else:
                mixed_boundary = f"=_mixed_{i}_{self.run}"
                body_headers, body = _multipart("mixed", mixed_boundary, [_part(*alternative), attachment])
        head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + body_headers
        return message_id, head + b"\r\n" + body


def _addr(name: str, address: str) -> str:
    if name.isascii():
        return f"\"{name}\" <{address}>"
    return f"{Header(name, 'utf-8').encode()} <{address}>"


def _subject(subject: str) -> str:
    return subject if subject.isascii() else Header(subject, "utf-8").encode()


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>\n")


def _text_part(text: str, subtype: str, qp: bool) -> tuple[bytes, bytes]:
    import quopri

    raw = text.replace("\n", "\r\n").encode("utf-8")
    if qp:
        body = quopri.encodestring(raw).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        encoding = "quoted-printable"
    else:
        # 8bit lines stay under 998 octets: wrap long paragraphs
        body = "\r\n".join(textwrap.fill(line, 76) if len(line) > 76 else line
                           for line in text.split("\n")).encode("utf-8")
        encoding = "8bit"
    return (f"Content-Type: text/{subtype}; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: {encoding}\r\n").encode(), body


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> tuple[bytes, bytes]:
    b = boundary.encode()
    body = b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + b + b"--\r\n"
    return f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n".encode(), body


def _part(headers: bytes, body: bytes) -> bytes:
    return headers + b"\r\n" + body


def append_corpus(dovecot, corpus: Corpus) -> tuple[dict[str, float], int, float]:
    """MULTIAPPEND the corpus; returns ({Message-ID: INTERNALDATE epoch}, total bytes, seconds)."""
    arrival: dict[str, float] = {}
    total = 0
    started = time.perf_counter()
    client = dovecot.client(timeout=120)
    try:
        multi = client.has_capability("MULTIAPPEND")
        for start in range(0, corpus.n, APPEND_BATCH):
            mails = [corpus.mail(i, datetime.now(timezone.utc))
                     for i in range(start, min(start + APPEND_BATCH, corpus.n))]
            now = datetime.now(timezone.utc).replace(microsecond=0)  # the INTERNALDATE we set
            batch = []
            for message_id, raw in mails:
                arrival[message_id] = now.timestamp()
                total += len(raw)
                batch.append({"msg": raw, "date": now})
            if multi:
                client.multiappend("INBOX", batch)
            else:
                for m in batch:
                    client.append("INBOX", m["msg"], msg_time=m["date"])
        count = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
    finally:
        client.logout()
    if count != corpus.n:
        raise RuntimeError(f"INBOX holds {count} mails after appending {corpus.n}")
    return arrival, total, time.perf_counter() - started


# =========================================================================== the service (child)


def _vm(field: str, pid: int | str = "self") -> int:
    """VmRSS/VmHWM of this process (or another) in KB (Linux), 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_main(spec_path: str) -> int:
    """Run the service until the parent writes "stop" (or closes stdin)."""
    import logging

    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

    def emit(**data) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    from bot.config import load_settings
    from bot.service import Service

    settings = load_settings(Path(spec["config"]), env={"SUPPORTBOT_IMAP_PASSWORD": spec["password"]})
    service = Service(settings, role=spec.get("role", "all"), wake_fd=spec.get("wake_fd"))
    emit(event="ready", rss_kb=_vm("VmRSS"))
    if sys.stdin.readline().strip() != "start":
        return 1
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    service.start()
    emit(event="started", t0=t0)
    sys.stdin.readline()  # "stop", or EOF if the parent died
    # Peaks as VmHWM, of this process and of its text worker: ru_maxrss survives exec on
    # Linux, so it would count the parent's pages at the fork (this benchmark's, here
    # about 89 MB, the same for both service processes).
    worker = service.worker and service.worker.pid
    helper_kb = _vm("VmHWM", worker) if worker else 0
    stopping = time.perf_counter()
    service.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    helpers = resource.getrusage(resource.RUSAGE_CHILDREN)  # its CPU time, once stop() waited for it
    emit(event="stopped", stop_seconds=time.perf_counter() - stopping,
         maxrss_kb=_vm("VmHWM") + helper_kb, helpers_kb=helper_kb,
         cpu_user=usage.ru_utime - cpu0.ru_utime + helpers.ru_utime,
         cpu_sys=usage.ru_stime - cpu0.ru_stime + helpers.ru_stime)
    return 0


class Child:
    """The service process, driven over stdin/stdout JSON lines."""

    def __init__(self, spec: dict, workdir: Path, profile: str | None, profile_idle: bool = False,
                 name: str = "child", pass_fds: tuple[int, ...] = ()) -> None:
        spec_path = workdir / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        self.log_path = workdir / f"{name}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]
        if profile:
            py_spy = shutil.which("py-spy")
            if not py_spy:
                raise SystemExit("--profile needs py-spy: pip install py-spy")
            fmt = {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}.get(Path(profile).suffix, "raw")
            cmd = [py_spy, "record", *(["--idle"] if profile_idle else []), "--threads",
                   "--rate", "200", "--format", fmt,
                   "--output", str(Path(profile).resolve()), "--", *cmd]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, cwd=workdir, text=True, bufsize=1, pass_fds=pass_fds)

    def read(self, expected: str, timeout: float) -> dict:
        result: dict = {}

        def reader() -> None:
            for line in self.proc.stdout:
                if line.startswith("{"):
                    data = json.loads(line)
                    if data.get("event") == expected:
                        result.update(data)
                        return
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        thread.join(timeout)
        if not result:
            raise RuntimeError(f"service child: no '{expected}' within {timeout:.0f} s "
                               f"(exit code {self.proc.poll()}); log:\n{self.tail()}")
        return result

    def send(self, line: str) -> None:
        with contextlib.suppress(OSError):  # a dead child: its exit code and log tell why
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def tail(self, lines: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# =========================================================================== the limit


def plain_mail(kind: str) -> bytes:
    """What the plain loop sends for each mail it fetches (see the module's docstring)."""
    if kind == "small":
        return (f"From: <{SUPPORT}>\r\nTo: <someone@acme.example>\r\nSubject: [SUP-000001] ack\r\n"
                f"Message-ID: <plain@vendor.example>\r\n\r\n" + "We received your request.\r\n" * 20).encode()
    from bot.compose import compose
    from bot.templating import SAMPLE_CONTEXT, Templates

    rendered = Templates().render("ack", "en", dict(SAMPLE_CONTEXT, recipient_name="Anna Müller"))
    return compose(rendered, sender=SUPPORT, sender_name="Vendor Support", recipient="anna.muller@acme.example",
                   recipient_name="Anna Müller", message_id="<plain@vendor.example>",
                   date=datetime.now(timezone.utc), in_reply_to="<request@acme.example>",
                   references=("<request@acme.example>",), ticket_reference="SUP-000001")


async def plain_loop(dovecot, sink, batch: int, mail: bytes) -> tuple[int, float]:
    """Fetch every INBOX mail (UID SEARCH ALL, UID FETCH INTERNALDATE BODY.PEEK[]) and send
    `mail` once per fetched mail over one aiosmtplib connection. Returns (mails, seconds)."""
    import aiosmtplib

    client = dovecot.client(timeout=120)
    smtp = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, timeout=30)
    try:
        started = time.perf_counter()
        await smtp.connect()
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        done = 0
        for start in range(0, len(uids), batch):
            chunk = uids[start:start + batch]
            response = client.fetch(chunk, ["INTERNALDATE", "BODY.PEEK[]"])
            for uid in chunk:
                if b"BODY[]" in response.get(uid, {}):
                    await smtp.sendmail("", ["someone@acme.example"], mail)
                    done += 1
        seconds = time.perf_counter() - started
        await smtp.quit()
    finally:
        client.logout()
    return done, seconds


# =========================================================================== the run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def count_unmarked(dovecot) -> int:
    from helpers import unmarked

    return len(unmarked(dovecot))


def _epoch(stored) -> float:
    """A stored UTC time (naive; a string on SQLite) as seconds since the epoch."""
    if isinstance(stored, str):
        stored = datetime.fromisoformat(stored)
    return stored.replace(tzinfo=timezone.utc).timestamp()


def db_summary(url: str) -> dict[str, dict[str, int]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return {
                "messages": dict(c.execute(sa.text("SELECT kind, count(*) FROM messages GROUP BY kind")).all()),
                "outbox": dict(c.execute(sa.text("SELECT status, count(*) FROM outbox GROUP BY status")).all()),
                "tickets": {"total": c.execute(sa.text("SELECT count(*) FROM tickets")).scalar_one()},
                "last": dict(zip(("ingested", "sent"), c.execute(sa.text(
                    "SELECT (SELECT max(processed_at) FROM messages), (SELECT max(sent_at) FROM outbox)")).one())),
            }
    finally:
        engine.dispose()


def import_contracts(db_url: str, workdir: Path) -> None:
    """--contracts: every sender's domain is an Astran customer (any employee is served),
    so each mail is entitled: graded, given a deadline, acknowledged with both."""
    from bot.contracts import import_file
    from bot.database import make_engine
    from bot.rules import load_rules
    customers = [{"key": domain.split(".")[0], "name": domain.split(".")[0].title(), "domains": [domain],
                  "contracts": [{"number": f"BENCH-{i}", "policy": "astran-standard", "effective": "2020-01-01",
                                 "term_months": 12}]}
                 for i, domain in enumerate(DOMAINS)]
    path = workdir / "contracts.yaml"
    path.write_text(json.dumps({"customers": customers}), encoding="utf-8")  # JSON is YAML
    engine = make_engine(db_url)
    try:
        import_file(engine, path, load_rules())
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    from bot.database import upgrade
    from helpers import write_config
    from servers import DovecotServer, PostgresServer, SmtpSink

    n = args.mails
    timeout = args.timeout or max(300.0, n * 0.1)
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731 - progress only
    wall_started = time.perf_counter()

    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="supportbot-bench-"))
        if args.keep:
            say(f"keeping {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, True)
        dovecot = stack.enter_context(DovecotServer())
        sink = stack.enter_context(SmtpSink())
        if args.db == "postgresql":
            pg = stack.enter_context(PostgresServer())
            db_url = pg.create_database()
        else:
            db_url = f"sqlite:///{workdir / 'supportbot.db'}"
        upgrade(db_url)
        if args.contracts:
            import_contracts(db_url, workdir)

        say(f"appending {n} mails ...")
        arrival, total_bytes, append_seconds = append_corpus(dovecot, Corpus(n, args.seed))
        say(f"appended {n} mails ({total_bytes / 1e6:.1f} MB) in {append_seconds:.1f} s")
        limit_mail = plain_mail(args.plain_mail)
        say("plain fetch+send loop, before the service ...")
        plain_runs = [asyncio.run(plain_loop(dovecot, sink, args.batch, limit_mail)) + (len(sink.messages),)]
        sink.clear()

        config = write_config(workdir, dovecot, sink, db_url,
                              imap={"batch_size": args.batch, "poll_seconds": 5},
                              smtp={"timeout": 30},
                              outbox={"batch_size": args.batch})  # shipped poll: wake-ups do the work
        # As `supportbot run` does (bot/supervise.py): two roles joined by a wake-up pipe.
        wake = dict(zip(("deliver", "ingest"), os.pipe())) if not args.one_process else {}
        roles = ("all",) if args.one_process else ("ingest", "deliver")
        children = [Child({"config": str(config), "password": dovecot.password, "role": role,
                           "wake_fd": wake.get(role)}, workdir,
                          args.profile if role == (args.profile_role or "ingest") or role == "all" else None, args.profile_idle,
                          name=f"child-{role}", pass_fds=tuple(wake.values()))
                    for role in roles]
        for fd in wake.values():
            os.close(fd)
        for child in children:
            stack.callback(child.close)
        readies = [child.read("ready", 60) for child in children]
        ready = {"rss_kb": sum(r["rss_kb"] for r in readies)}
        for child in children:
            child.send("start")
        t0 = min(child.read("started", 60)["t0"] for child in children)
        say("service started" + (" in one process" if args.one_process else " as two processes (ingest, deliver)"))
        any_died = lambda: any(c.proc.poll() is not None for c in children)  # noqa: E731

        # -- wait for N acks, then for an empty inbox (marking follows each batch's commit)
        deadline = time.monotonic() + timeout
        last_report, timed_out = time.monotonic(), False
        while True:
            got = len(sink.messages)
            if got >= n or any_died():
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            if time.monotonic() - last_report > 10:
                say(f"  {got}/{n} acks after {time.time() - t0:.0f} s")
                last_report = time.monotonic()
            with contextlib.suppress(TimeoutError):
                sink.wait_for(n, timeout=1.0)
        left = count_unmarked(dovecot)
        drained_at = None  # None: already drained when the last ack arrived
        while left and not timed_out and not any_died() and time.monotonic() < deadline:
            time.sleep(0.05)
            left = count_unmarked(dovecot)
            drained_at = time.time()
        acks = sink.messages
        results = []
        for child in children:
            stopped = {"maxrss_kb": 0, "helpers_kb": 0, "cpu_user": float("nan"), "cpu_sys": float("nan"),
                       "stop_seconds": float("nan")}
            if child.proc.poll() is None:
                child.send("stop")
                with contextlib.suppress(RuntimeError):
                    stopped = child.read("stopped", 120)
            child.close()
            if child.proc.returncode or not stopped["maxrss_kb"]:
                say(f"service child exited with {child.proc.returncode}; log tail:\n{child.tail()}")
            results.append(stopped)
        # Summed: the processes run side by side (an upper bound: their peaks may not coincide).
        stopped = {"maxrss_kb": sum(r["maxrss_kb"] for r in results),
                   "per_process": [r["maxrss_kb"] for r in results],
                   "helpers": [r["helpers_kb"] for r in results],
                   "cpu_per_process": [r["cpu_user"] + r["cpu_sys"] for r in results],
                   "cpu_user": sum(r["cpu_user"] for r in results),
                   "cpu_sys": sum(r["cpu_sys"] for r in results),
                   "stop_seconds": max(r["stop_seconds"] for r in results)}
        child = children[0]

        # -- figures for the service phase
        parser = BytesHeaderParser()
        latencies, since_start, unmatched = [], [], 0
        for ack in acks:
            in_reply_to = parser.parsebytes(ack.data).get("In-Reply-To", "").strip()
            if in_reply_to in arrival:
                latencies.append(ack.received_at - arrival[in_reply_to])
                since_start.append(ack.received_at - t0)
            else:
                unmatched += 1
        last_ack = max((a.received_at for a in acks), default=time.time())
        end = max(last_ack, drained_at or last_ack)
        elapsed = end - t0
        ours = len(latencies) / elapsed if elapsed > 0 else 0.0
        summary = db_summary(db_url)
        child_log = child.tail(10)

        # -- the limit
        say("plain fetch+send loop, after the service ...")
        sink.clear()
        plain_runs.append(asyncio.run(plain_loop(dovecot, sink, args.batch, limit_mail)) + (len(sink.messages),))
        plain_rates = [done / seconds if seconds > 0 else 0.0 for done, seconds, _ in plain_runs]
        plain_rate = sum(plain_rates) / len(plain_rates)
        sink_ok = all(done == accepted for done, _, accepted in plain_runs)

    fraction = ours / plain_rate if plain_rate else 0.0
    rss = stopped["maxrss_kb"]
    yes = lambda ok: "yes" if ok else "NO"  # noqa: E731

    print(f"supportbot ingest benchmark: N={n}, db={args.db}, batch={args.batch}, "
          f"{'senders under contract, ' if args.contracts else ''}"
          f"{total_bytes / n / 1024:.1f} KB/mail average ({total_bytes / 1e6:.1f} MB), seed={args.seed}")
    print(f"  append (MULTIAPPEND, one connection):  {append_seconds:8.1f} s")
    print(f"  service phase, start -> last ack/drain: {elapsed:8.1f} s"
          + ("   (TIMED OUT)" if timed_out else ""))
    print(f"  acks matched / expected:               {len(latencies):8d} / {n}"
          + (f"   ({unmatched} unmatched, {len(acks)} accepted)" if unmatched or len(acks) != n else ""))
    print(f"  unmarked mails left in INBOX:          {left:8d}")
    print(f"  throughput end to end:                 {ours:8.1f} mails/s")
    print(f"  latency INTERNALDATE -> ack accepted:  p50 {percentile(latencies, .5):7.2f} s   "
          f"p99 {percentile(latencies, .99):7.2f} s   (includes the backlog wait)")
    print(f"  latency service start -> ack accepted: p50 {percentile(since_start, .5):7.2f} s   "
          f"p99 {percentile(since_start, .99):7.2f} s")
    per_process = " + ".join(f"{kb / 1024:.1f}" + (f" [{h / 1024:.1f} of it its text worker]" if h else "")
                             for kb, h in zip(stopped["per_process"], stopped["helpers"]))
    print(f"  service peak RSS (sum over processes): {rss / 1024:8.1f} MB   ({per_process}; "
          f"after imports + Service(): {ready['rss_kb'] / 1024:.1f} MB)")
    print(f"  service CPU (child user+sys):          {stopped['cpu_user'] + stopped['cpu_sys']:8.1f} s   "
          f"({' + '.join(f'{c:.1f}' for c in stopped['cpu_per_process'])}; "
          f"{stopped['cpu_user']:.1f} user, {stopped['cpu_sys']:.1f} sys; stop took {stopped['stop_seconds']:.2f} s)")
    done = {what: _epoch(at) - t0 for what, at in summary["last"].items() if at}
    print(f"  last mail ingested / last sent, after:  " + " / ".join(f"{s:.1f} s" for s in done.values())
          + "   (the later one is the bottleneck)")
    print(f"  database: messages {summary['messages']}, outbox {summary['outbox']}, "
          f"tickets {summary['tickets']['total']}")
    print(f"  plain imapclient+aiosmtplib loop:      {plain_rate:8.1f} mails/s, sending "
          f"{len(limit_mail) / 1024:.1f} KB a mail "
          f"(mean of {plain_rates[0]:.1f} before and {plain_rates[1]:.1f} after the service"
          f"{'' if sink_ok else ', sink count mismatch'})")
    print(f"  ours / plain loop:                     {fraction:8.1%}")
    print(f"  target >= {TARGET_FRACTION:.0%} of the plain loop (at N=10,000): {yes(fraction >= TARGET_FRACTION)}"
          + ("" if n >= 10_000 else f"   (measured at N={n})"))
    print(f"  target peak RSS < {TARGET_RSS_KB // 1024} MB: "
          + (yes(rss < TARGET_RSS_KB) if rss else "unknown (the service child did not report)"))
    print(f"  all {n} mails acknowledged and marked: {yes(len(latencies) == n and not left)}")
    print(f"  total run time {time.perf_counter() - wall_started:.1f} s")
    if "Traceback" in child_log or "quarantined" in child_log:
        print("  service log tail:\n" + textwrap.indent(child_log, "    "))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=1000, help="number of customer mails (default 1000)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--batch", type=int, default=200, help="IMAP and outbox batch size (default 200)")
    parser.add_argument("--timeout", type=float, default=0,
                        help="bound on the service phase in seconds (default max(300, N/10))")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", metavar="FILE", help="run the service under py-spy record "
                        "(.svg flamegraph, .json speedscope, else raw collapsed stacks)")
    parser.add_argument("--profile-role", choices=("ingest", "deliver"),
                        help="with --profile and two processes: which one (default ingest)")
    parser.add_argument("--profile-idle", action="store_true",
                        help="with --profile: also sample waiting threads (wall time, not CPU)")
    parser.add_argument("--one-process", action="store_true",
                        help="run both jobs in one process (supportbot run --single-process); "
                             "by default ingest and delivery are two processes, as supportbot run does")
    parser.add_argument("--plain-mail", choices=("ack", "small"), default="ack",
                        help="what the plain loop sends per mail: an acknowledgement like ours (default) "
                             "or a 0.6 KB mail")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, db, child log)")
    parser.add_argument("--contracts", action="store_true",
                        help="put every sender under contract, so that each mail is graded and given a deadline")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    if args.mails < 1 or args.batch < 1:
        parser.error("--mails and --batch must be positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
