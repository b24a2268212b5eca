"""Shared fixtures: real Dovecot / PostgreSQL / SMTP servers on 127.0.0.1 (see servers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import running
from servers import (
    DovecotServer,
    PostgresServer,
    ServerNotInstalled,
    SmtpSink,
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL cluster for the whole session (initdb ~1 s)."""
    yield from running(PostgresServer())


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """A fresh Dovecot per test (starts in <0.1 s): user ``support``, empty Maildir."""
    yield from running(DovecotServer())


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A recording SMTP server; ``refuse()``/``accept()``, ``stop()``/``start()`` (same port)."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty database URL per test: SQLite file or a new PostgreSQL database.

    PostgreSQL is started lazily (only when a postgresql-parametrized test runs); the
    database is dropped afterwards, terminating connections the test left open.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'supportbot.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)
