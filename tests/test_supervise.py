"""`supportbot run` as two processes (bot/supervise.py): real processes, real signals.

The parent runs the ingest and deliver roles as children joined by a wake-up pipe. These
tests hold it to what an operator relies on: an acknowledgement goes out at once although
delivery only polls every minute; SIGTERM stops everything cleanly; SIGKILL of the parent
takes the children with it; a child that dies stops the service with a failing status.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from bot.database import upgrade
from helpers import Running, customer_mail, settings_for, wait_until, write_config


@pytest.fixture
def service(tmp_path, dovecot, smtp_sink):
    # Delivery polls once a minute: only the wake-up from ingest can make an ack quick.
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'bot.db'}",
                          outbox={"poll_seconds": 60})
    upgrade(settings_for(config, dovecot).database.url)
    running = Running(config, dovecot)
    wait_until(lambda: sum("supportbot started" in line for line in running.lines) == 2, timeout=30,
               what="both processes to start")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def children(running: Running) -> dict[str, int]:
    for line in running.lines:
        found = re.search(r"ingest \(pid (\d+)\), deliver \(pid (\d+)\)", line)
        if found:
            return {"ingest": int(found[1]), "deliver": int(found[2])}
    raise AssertionError("no child pids logged:\n" + "".join(running.lines))


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for whoever adopted it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_an_ack_goes_out_at_once_and_sigterm_stops_both(service, dovecot, smtp_sink):
    pids = children(service)
    assert service.process.pid not in pids.values()
    dovecot.append(customer_mail(1))
    started = time.monotonic()
    [ack] = smtp_sink.wait_for(1, timeout=30)
    assert time.monotonic() - started < 30, "sent by the minute's poll, not by the wake-up"
    assert ack.message["Subject"] == "[SUP-000001] Request number 1"
    code, output = service.terminate()
    assert code == 0, output
    assert output.count("supportbot stopped") == 2, output
    assert all(gone(pid) for pid in pids.values())


def test_sigkill_of_the_parent_takes_the_children_with_it(service):
    pids = children(service)
    service.process.kill()
    service.process.wait()
    wait_until(lambda: all(gone(pid) for pid in pids.values()), timeout=10, what="children to die")


def test_a_child_that_dies_stops_the_service_with_a_failing_status(service):
    pids = children(service)
    os.kill(pids["deliver"], signal.SIGKILL)
    code = service.process.wait(timeout=30)
    output = "".join(service.lines)
    assert code == 1, output
    assert "the deliver process ended (exit status -9); stopping supportbot" in output
    assert gone(pids["ingest"])


def test_a_wrong_password_is_one_clear_error(tmp_path, dovecot, smtp_sink):
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(settings_for(config, dovecot).database.url)
    dovecot_copy = type("Wrong", (), {"password": "wrong"})()
    running = Running(config, dovecot_copy)
    code = running.process.wait(timeout=60)
    running._reader.join(timeout=5)
    output = "".join(running.lines)
    assert code == 2, output
    assert output.count("supportbot: error:") == 1 and "Traceback" not in output, output
