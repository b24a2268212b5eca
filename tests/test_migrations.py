"""Alembic migrations create exactly the tables the models describe, on both backends."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import bot.models  # noqa: F401
from bot.database import (SCHEMA_REVISION, SchemaOutdated, alembic_config, current_revision, head_revision,
                          make_engine, require_current_schema, upgrade)


def test_the_revision_the_service_requires_is_alembics_head():
    assert SCHEMA_REVISION == head_revision()


def test_models_and_migrations_do_not_drift(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent_and_downgrade_works(db_url):
    upgrade(db_url)
    upgrade(db_url)
    engine = make_engine(db_url)
    assert current_revision(engine) == head_revision()
    command.downgrade(alembic_config(db_url), "base")
    assert current_revision(engine) is None
    assert sa.inspect(engine).get_table_names() == ["alembic_version"] or \
        set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_outdated_schema_is_refused_with_the_fix(db_url):
    engine = make_engine(db_url)
    try:
        require_current_schema(engine, "supportbot db upgrade --config x.toml")
    except SchemaOutdated as error:
        assert "empty" in str(error) and "supportbot db upgrade --config x.toml" in str(error)
    else:
        raise AssertionError("an empty database was accepted")
    finally:
        engine.dispose()
