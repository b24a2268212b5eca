#!/usr/bin/env python3
"""Micro-benchmark of bot.mailparse.parse() on a realistic in-memory corpus.

    python tests/benchmarks/parse.py [--mails 600] [--runs 7] [--seed 1] [--profile]
                                     [--module OTHER.py ...] [--check]

Corpus: every .eml under tests/data/clients and tests/data/nasty (real client output and
hostile input), plus generated 2-30 KB customer mails: those of the ingest benchmark
(plain, multipart/alternative with HTML, small base64 attachments, RFC 2047 subjects and
names, English quoted replies) and quoted replies as French and English clients write them
(Gmail's wrapped "Le ... a écrit :", Outlook's "De : / Envoyé : / Objet :" block).

Prints, per group and overall, the median over --runs of the CPU time per mail (µs) and
the resulting mails/second (one core).  --profile prints the top of a cProfile run instead.
--module times another copy of mailparse.py as well (e.g. `git show HEAD:bot/mailparse.py
> /tmp/old.py`), interleaved with the working copy, so that both see the same machine load.
--check (with --module) times nothing: it compares every ParsedMail field of the two
versions on the corpus, tests/data/cpython and truncated or line-ending-mangled variants
of all of them, and prints the differences: an optimisation must not change any.
Only figures are printed (no asserts).  Not a pytest module (tests/benchmarks is not
collected).  The service's budget is about 2 ms of CPU per mail, all stages included.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import random
import statistics
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path[:0] = [p for p in (str(HERE), str(TESTS.parent)) if p not in sys.path]

import ingest  # noqa: E402  (the ingest benchmark's generator: same mails as the service sees)

import bot.mailparse  # noqa: E402

FIXTURE_DIRS = ("clients", "nasty")
FR_DAYS = ("lun.", "mar.", "mer.", "jeu.", "ven.")
FR_MONTHS = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.")


def fixtures() -> list[bytes]:
    """The test suite's real-client and hostile mails."""
    return [p.read_bytes() for d in FIXTURE_DIRS for p in sorted((TESTS / "data" / d).glob("*.eml"))]


def ingest_mails(n: int, seed: int) -> list[bytes]:
    """The ingest benchmark's mails: 45 % plain, 45 % alternative, 10 % with attachment,
    15 % replies with an "On ..., a colleague wrote:" quote."""
    corpus = ingest.Corpus(n, seed)
    start = datetime(2024, 6, 3, 9, 0, tzinfo=timezone.utc)
    return [corpus.mail(i, start + timedelta(seconds=7 * i))[1] for i in range(n)]


def reply_mails(n: int, seed: int) -> list[bytes]:
    """Replies quoting a long earlier exchange, half French, half English, half HTML."""
    r = random.Random(seed)
    corpus = ingest.Corpus(n, seed)  # borrowed for its sentence generator
    out = []
    for i in range(n):
        values = corpus._fill()
        french = i % 2 == 0
        own = "\n\n".join(corpus._paragraphs(r.randint(300, 1500), values))
        quoted = "\n".join(corpus._paragraphs(int(2048 * 10 ** r.random()), values))
        when = datetime(2024, 5, 1 + i % 28, 8 + i % 10, 12, tzinfo=timezone.utc)
        if i % 4 == 3:  # Outlook: header block, original not quoted
            block = ("De : Vendor Support <support@vendor.example>" if french else
                     "From: Vendor Support <support@vendor.example>")
            block += ("\nEnvoyé : " if french else "\nSent: ") + format_datetime(when)
            block += "\nÀ : Anna Müller\nObjet : RE: Ticket" if french else "\nTo: Anna\nSubject: RE: Ticket"
            body = f"{own}\n\nCordialement,\nAnna\n\n{'_' * 32}\n{block}\n\n{quoted}\n"
        else:
            if french:
                date = f"{FR_DAYS[i % 5]} {when.day} {FR_MONTHS[i % 10]} 2024 à {when:%H:%M}"
                attribution = f"Le {date}, Vendor Support <support@vendor.example> a\nécrit :"
            else:
                attribution = f"On {format_datetime(when)}, Vendor Support <support@vendor.example> wrote:"
            lines = textwrap.wrap(quoted.replace("\n", " "), 72)
            body = f"{own}\n\nRegards,\nAnna\n\n{attribution}\n" + "\n".join("> " + x for x in lines) + "\n"
        text = ingest._text_part(body, "plain", qp=r.random() < 0.5)
        subject = ("RE: " if i % 4 == 3 else "Re: ") + ("Problème avec l'export – urgent" if french
                                                        else "Störung: the API gateway")
        head = (f"From: {ingest._addr('Zoé Lefèvre', f'zoe.{i}@acme.example')}\r\n"
                f"To: support@vendor.example\r\nSubject: {ingest._subject(subject)}\r\n"
                f"Date: {format_datetime(when + timedelta(hours=3))}\r\n"
                f"Message-ID: <reply-{i}@acme.example>\r\nIn-Reply-To: <ack-{i}@vendor.example>\r\n"
                f"References: <orig-{i}@acme.example> <ack-{i}@vendor.example>\r\nMIME-Version: 1.0\r\n")
        if i % 3 == 0:
            html = "<html><body>" + "".join(f"<p>{ingest._html(p)}</p>" for p in body.split("\n\n"))
            html_part = ingest._text_part(html + "</body></html>", "html", qp=True)
            headers, payload = ingest._multipart(
                "alternative", f"=_b{i}", [ingest._part(*text), ingest._part(*html_part)])
        else:
            headers, payload = text
        out.append(head.encode() + headers + b"\r\n" + payload)
    return out


def corpus(n: int, seed: int) -> dict[str, list[bytes]]:
    return {
        "fixtures (clients+nasty)": fixtures(),
        "ingest mails": ingest_mails(n * 2 // 3, seed),
        "EN/FR quoted replies": reply_mails(n - n * 2 // 3, seed + 1),
    }


def check_corpus(groups: dict[str, list[bytes]]) -> list[bytes]:
    """Everything in the timing corpus, the stdlib's own test mails, and cheap mutations
    (cut short, LF-only, CR-only) of the small ones: the odd inputs where two versions
    are most likely to part."""
    base = [m for mails in groups.values() for m in mails]
    base += [p.read_bytes() for p in sorted((TESTS / "data" / "cpython").glob("*.txt"))]
    base += edge_mails()
    variants = []
    for raw in (m for m in base if len(m) < 20_000):
        variants += [raw[: len(raw) * k // 4] for k in (1, 2, 3)]
        variants += [raw.replace(b"\r\n", b"\n"), raw.replace(b"\r\n", b"\r")]
    return base + variants


EDGE_BODIES = (
    "Hi\n\nOn Monday, 3 June, Anna wrote:\n> old",
    "Hi\n\nOn\nMonday 3 June, Anna wrote:\n> old",  # wrapped right after "On"
    "Hi\n\n  On Monday 3 June, Anna\n   wrote:  \n> old",
    "Hi\n\nOn Monday ², Anna wrote:\n> old",  # str.isdigit() but not \\d
    "Hi\n\nOn Monday ٣ June, Anna wrote:\n> old",  # Arabic-Indic digit
    "Hi\n\nLe lun. 3 juin 2024 à 10:12, Anna <a@b.example> a\nécrit :\n\n> vieux",
    "Hi\n\nOn Monday 3 June, Anna wrote:\nnot quoted\n",
    "Hi\n\nOn Monday, Anna wrote:\n> undated",
    "Hi\nwrote:\nOn 3 June\nwrote:",
    "Hi\n  --\nnot a signature separator: indented\n--\nsignature",
    "Hi\n> --\n> Sent from my iPhone\nmore",
)
EDGE_HTML = ("<p>fine</p>", "<![if x]>weird<![endif]>", "<!DOCTYPE [>x", "<p>\xff\xfe</p>",
             "<p>a</p><![foo[x]]>b", "<<!---->![bogus[x")  # html.parser raises on these


def edge_mails() -> list[bytes]:
    """Attribution corner cases, and HTML that cannot be decoded or parsed next to a
    usable text/plain part (its defects are part of the result)."""
    head = b"From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
    out = [head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + t.encode() for t in EDGE_BODIES]
    for html in EDGE_HTML:
        for plain in ("text", ""):
            for charset in ("utf-8", "x-unknown"):
                out.append(head + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
                           b"--b\r\nContent-Type: text/plain\r\n\r\n" + plain.encode() + b"\r\n"
                           b"--b\r\nContent-Type: text/html; charset=" + charset.encode() + b"\r\n\r\n"
                           + html.encode("latin-1") + b"\r\n--b--\r\n")
    return out


def compare(modules: list, mails: list[bytes]) -> int:
    """Number of mails on which some module's result differs from the first one's."""
    def outcome(module, raw):
        try:
            # repr: each module has its own Attachment class, equal fields or not
            return {k: repr(v) for k, v in module.parse(raw).__dict__.items()}
        except module.UnparseableMail as error:
            return {"UnparseableMail": error.reason}

    differing = 0
    for number, raw in enumerate(mails):
        want = outcome(modules[0], raw)
        for module in modules[1:]:
            got = outcome(module, raw)
            fields = [k for k in want.keys() | got.keys() if want.get(k) != got.get(k)]
            if fields:
                differing += 1
                if differing <= 10:
                    print(f"mail #{number} ({raw[:60]!r}...): {module.__file__}")
                    for k in sorted(fields):
                        print(f"  {k}:\n    {want.get(k):.300}\n    {got.get(k):.300}")
    print(f"{len(mails)} mails compared, {differing} differ")
    return differing


def load(path: str):
    """A mailparse module from a file (another version to compare with)."""
    spec = importlib.util.spec_from_file_location(f"mailparse_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def parse_all(module, mails: list[bytes]) -> None:
    for raw in mails:
        try:
            module.parse(raw)
        except module.UnparseableMail:
            pass


def cpu_per_mail(modules: list, mails: list[bytes], runs: int) -> list[float]:
    """Per module, the median over runs of the process CPU time per mail, in µs.  Runs
    of the modules are interleaved so that a change of machine load hits them alike."""
    samples: list[list[float]] = [[] for _ in modules]
    for module in modules:
        parse_all(module, mails)  # warm-up: imports, regex and codec caches
    for _ in range(runs):
        for module, times in zip(modules, samples):
            start = time.process_time()
            parse_all(module, mails)
            times.append((time.process_time() - start) / len(mails) * 1e6)
    return [statistics.median(times) for times in samples]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=600, help="generated mails (default 600)")
    ap.add_argument("--runs", type=int, default=7, help="timed runs; the median is printed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    ap.add_argument("--module", action="append", default=[], metavar="FILE",
                    help="also time this copy of mailparse.py (repeatable)")
    ap.add_argument("--check", action="store_true",
                    help="compare the results of --module with the working copy's; no timing")
    args = ap.parse_args(argv)

    groups = corpus(args.mails, args.seed)
    everything = [m for mails in groups.values() for m in mails]
    modules = [bot.mailparse, *map(load, args.module)]
    if args.check:
        return 1 if compare(modules, check_corpus(groups)) else 0
    if args.profile:
        parse_all(bot.mailparse, everything)
        profiler = cProfile.Profile()
        profiler.runcall(parse_all, bot.mailparse, everything)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return 0

    names = ["bot/mailparse.py", *args.module]
    print(f"{'group':26} {'mails':>6} {'avg KB':>7}" + "".join(f" | {n[-26:]:>26}" for n in names))
    print(f"{'':42}" + " | {:>9} {:>16}".format("µs/mail", "mails/s") * len(names))
    for name, mails in [*groups.items(), ("all", everything)]:
        kb = sum(map(len, mails)) / len(mails) / 1024
        cells = "".join(f" | {us:9.0f} {1e6 / us:16.0f}" for us in cpu_per_mail(modules, mails, args.runs))
        print(f"{name:26} {len(mails):6d} {kb:7.1f}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
