"""Test helpers: a supportbot.toml pointing at the test servers, and waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlmodel import Session, select

from bot.config import load_settings


def write_config(folder: Path, dovecot, sink, db_url: str, **sections) -> Path:
    """A deployment file for real servers on loopback; `sections` override keys per table."""
    tables = {
        "bot": {"support_address": "support@vendor.example", "from_name": "Vendor Support",
                "instance_name": "test"},
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "security": "plain",
                 "username": dovecot.username, "poll_seconds": 0.5, "batch_size": 10},
        "smtp": {"host": "127.0.0.1", "port": sink.port if sink else 1, "security": "plain",
                 "timeout": 5},
        "outbox": {"poll_seconds": 0.2, "retry_base_seconds": 0.2, "retry_max_seconds": 1},
        "database": {"url": db_url},
    }
    for table, values in sections.items():
        tables[table].update(values)
    path = folder / "supportbot.toml"
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items()) + "\n"
                            for name, values in tables.items()), encoding="utf-8")
    return path


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def settings_for(path: Path, dovecot):
    return load_settings(path, env={"SUPPORTBOT_IMAP_PASSWORD": dovecot.password})


def running(server):
    """Start a test server and stop it afterwards (a generator for fixtures). Missing
    binaries FAIL the test, never skip it: CI must install them (`.ci/run` does)."""
    import pytest
    from servers import ServerNotInstalled

    try:
        server.start()
    except ServerNotInstalled as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def wait_until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def count(engine, model, *where) -> int:
    with Session(engine) as session:
        return len(session.exec(select(model).where(*where)).all())


def unmarked(dovecot, keyword: str = "$SupportbotProcessed") -> list[int]:
    client = dovecot.client()
    try:
        client.select_folder("INBOX", readonly=True)
        return client.search(["UNKEYWORD", keyword])
    finally:
        client.logout()


def customer_mail(n: int, sender: str | None = None) -> bytes:
    sender = sender or f"customer{n}@acme.example"
    return (f"From: Customer {n} <{sender}>\r\nTo: support@vendor.example\r\n"
            f"Subject: Request number {n}\r\nMessage-ID: <req-{n}@acme.example>\r\n"
            f"Date: Mon, 23 Nov 2026 09:00:00 +0100\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"\r\nHello, this is request {n}. Our instance does not answer.\r\n").encode()


class Running:
    """`supportbot run` in a child process, its output collected as it comes."""

    def __init__(self, config, dovecot, *options: str) -> None:
        env = dict(os.environ, SUPPORTBOT_IMAP_PASSWORD=dovecot.password)
        self.process = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(config), *options],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    def wait_started(self) -> None:
        wait_until(lambda: any("supportbot started" in line for line in self.lines), timeout=30,
                   what="the service to start")

    def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        return code, "".join(self.lines)
