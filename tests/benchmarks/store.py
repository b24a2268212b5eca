#!/usr/bin/env python3
"""Store benchmark: CPU per mail for decide + record on a real database, no IMAP or SMTP.

    PYTHONPATH=tests python tests/benchmarks/store.py [--mails 3000] [--slice 20] [--db sqlite|postgresql]

Records the ingest benchmark's mails (tests/benchmarks/ingest.py's Corpus) in slices, as
the ingestor does, and prints milliseconds of CPU and of wall time per mail. Then it splits
the CPU of one more run into parse, decide and write, so that the next optimisation aims
at the right part. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from parse import ingest_mails  # noqa: E402  (tests/benchmarks/parse.py)

from bot import decide as d  # noqa: E402
from bot.clock import VirtualClock  # noqa: E402
from bot.database import make_engine, upgrade  # noqa: E402
from bot.mailbox import FetchedMail  # noqa: E402
from bot.mailparse import parse as parse_mail  # noqa: E402
from bot.store import Sender, Store  # noqa: E402
from bot.templating import Templates  # noqa: E402

POLICY = d.Policy(support_address="support@vendor.example", message_id_domain="vendor.example")
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=timezone.utc)


def record_all(url: str, mails: list[FetchedMail], slice_size: int) -> tuple[float, float]:
    upgrade(url)
    engine = make_engine(url)
    store = Store(engine, VirtualClock(T0), Templates(),
                  Sender("support@vendor.example", "Vendor Support", "vendor.example"))
    store.note_uidvalidity("INBOX", 1)
    cpu, wall = time.process_time(), time.perf_counter()
    for first in range(0, len(mails), slice_size):
        store.record_batch("INBOX", 1, mails[first:first + slice_size], POLICY)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    engine.dispose()
    return cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=3000)
    parser.add_argument("--slice", type=int, default=20)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    raws = ingest_mails(args.mails, args.seed)
    mails = [FetchedMail(uid, T0 + timedelta(seconds=uid), raw) for uid, raw in enumerate(raws, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.db == "postgresql":
            from servers import PostgresServer
            with PostgresServer() as server:
                cpu, wall = record_all(server.url, mails, args.slice)
        else:
            cpu, wall = record_all(f"sqlite:///{tmp}/bench.sqlite", mails, args.slice)
    started = time.process_time()
    for raw in raws:
        parse_mail(raw)
    parse_ms = (time.process_time() - started) * 1000 / len(raws)
    n = len(mails)
    print(f"store benchmark: N={n}, db={args.db}, slice={args.slice}")
    print(f"  record (decide + write + compose): {cpu * 1000 / n:6.3f} ms CPU/mail, "
          f"{wall * 1000 / n:6.3f} ms wall/mail, {n / wall:7.0f} mails/s")
    print(f"  of which parsing alone:            {parse_ms:6.3f} ms CPU/mail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
