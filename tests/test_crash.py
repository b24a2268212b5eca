"""SIGKILL the real `supportbot run` process while it drains a backlog, again and again.

After every kill and restart: exactly one ticket per mail, at most one acknowledgement per
mail at the SMTP server, every mail eventually marked. Then SIGTERM stops it cleanly.
"""

from __future__ import annotations

import collections
import random
import time

from sqlmodel import Session, select

from bot.database import make_engine, upgrade
from bot.models import Message, OutboxMail, Ticket
from helpers import Running, customer_mail, settings_for, unmarked, wait_until, write_config

MAILS = 600  # twelve slices (bot.ingest.SLICE_MAILS): kills land mid-drain
KILLS = 6


def test_sigkill_while_draining_loses_and_doubles_nothing(tmp_path, dovecot, smtp_sink, db_url):
    config = write_config(tmp_path, dovecot, smtp_sink, db_url, imap={"batch_size": 3},
                          outbox={"batch_size": 2, "poll_seconds": 0.05})
    settings = settings_for(config, dovecot)
    upgrade(settings.database.url)
    for n in range(MAILS):
        dovecot.append(customer_mail(n))
    rng = random.Random(20261122)
    engine = make_engine(settings.database.url)
    progress = []
    for _ in range(KILLS):
        before = _count(engine, Ticket)
        if before == MAILS:
            break  # the backlog is drained: no mid-drain moment is left to kill at
        victim = Running(config, dovecot)
        # Kill at a random moment once it is busy: mid-transaction, mid-mark, mid-send.
        wait_until(lambda: _count(engine, Ticket) > before or victim.process.poll() is not None,
                   timeout=60, what="the service to make progress")
        time.sleep(rng.uniform(0, 0.3))
        victim.process.kill()
        victim.process.wait()
        progress.append(_count(engine, Ticket))
    print("tickets after each kill:", progress)
    # The kills must land while the backlog drains, not before it starts or after it ends.
    assert any(0 < done < MAILS for done in progress), progress
    survivor = Running(config, dovecot)
    try:
        survivor.wait_started()
        wait_until(lambda: not unmarked(dovecot), timeout=60, what="backlog drained")
        wait_until(lambda: _unsent(engine) == 0, timeout=60, what="outbox settled")
    finally:
        code, output = survivor.terminate()
    assert code == 0, output

    with Session(engine) as session:
        tickets = session.exec(select(Ticket)).all()
        messages = session.exec(select(Message)).all()
        acks = session.exec(select(OutboxMail)).all()
    assert len(tickets) == MAILS
    assert sorted(m.message_id for m in messages) == sorted(f"<req-{n}@acme.example>" for n in range(MAILS))
    assert len(acks) == MAILS  # one queued acknowledgement per ticket, never two
    delivered = collections.Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    assert max(delivered.values()) == 1, "an acknowledgement was sent twice"
    sent = {a.message_id for a in acks if a.status == "sent"}
    assert sent <= set(delivered)
    # Anything not sent was interrupted mid-send by a kill: it waits for the operator.
    assert {a.status for a in acks} <= {"sent", "sending", "uncertain"}
    engine.dispose()


def _count(engine, model) -> int:
    with Session(engine) as session:
        return len(session.exec(select(model.id)).all())


def _unsent(engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(OutboxMail.id).where(OutboxMail.status == "pending")).all())


def test_sigterm_stops_cleanly_while_idle(tmp_path, dovecot, smtp_sink):
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(settings_for(config, dovecot).database.url)
    service = Running(config, dovecot)
    service.wait_started()
    dovecot.append(customer_mail(1))
    smtp_sink.wait_for(1, timeout=30)
    started = time.monotonic()
    code, output = service.terminate()
    assert code == 0, output
    assert time.monotonic() - started < 10
    assert "supportbot stopped" in output
