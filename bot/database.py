"""Engines and schema migrations (Alembic, scripts in db/) for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.resources import shipped_dir

# The migration (db/versions) this code needs; tests check that it is Alembic's head. The
# service compares it with the database itself: importing Alembic costs 11 MB per process.
SCHEMA_REVISION = "0004"


class SchemaOutdated(Exception):
    """The database is not at the schema this version of supportbot needs."""


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, foreign keys and real savepoints."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _sqlite_begin(connection) -> None:
    """Take the write lock up front: in WAL mode a read transaction that later writes fails at
    once (SQLITE_BUSY_SNAPSHOT) when another connection wrote meanwhile; waiting is better.
    A snapshot() only reads, and takes no lock."""
    read_only = connection.get_execution_options().get(_SNAPSHOT, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


_SNAPSHOT = "supportbot_snapshot"


@contextmanager
def snapshot(engine: Engine) -> Iterator[sa.Connection]:
    """A read-only transaction that sees one consistent state of the database and blocks no
    writer (SQLite: a deferred transaction in WAL mode; PostgreSQL: REPEATABLE READ)."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(**{_SNAPSHOT: True})
        else:
            connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Let SQLAlchemy, not the sqlite3 module, drive transactions, so SAVEPOINT works.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def alembic_config(url: str):
    from alembic.config import Config as AlembicConfig
    config = AlembicConfig()
    config.set_main_option("script_location", str(shipped_dir("db")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    from alembic import command
    command.upgrade(alembic_config(url), "head")


def head_revision() -> str:
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def require_current_schema(engine: Engine, fix_hint: str) -> None:
    """Refuse to run on a database that is older (or newer) than this code."""
    current, head = current_revision(engine), SCHEMA_REVISION
    if current != head:
        state = "empty" if current is None else f"at revision {current}"
        raise SchemaOutdated(
            f"the database is {state}, this supportbot needs revision {head}; run: {fix_hint}"
        )
