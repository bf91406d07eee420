"""Least privilege on the real PostgreSQL: the owner role migrates, the runtime role appends
and projects but can never rewrite, delete, truncate or unguard the event store."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from deploy.infra import Endpoints
from shared.chain_key import ChainKey
from shared.db import SHARED_MIGRATIONS, create_pool, migrate, migration_files, with_database
from shared.db_roles import apply_grants, role_is_privileged
from shared.postgres_eventstore import PostgresEventStore
from tests.factories import aggregate_id, new_event

REFUSED = asyncpg.InsufficientPrivilegeError


async def _one_event(pool: asyncpg.Pool) -> None:
    await PostgresEventStore(pool, "LON", chain_key=ChainKey.generate()).append(
        aggregate_id(), 0, [new_event()]
    )


async def test_the_runtime_role_appends_but_cannot_update_delete_or_truncate_events(
    runtime_pool: asyncpg.Pool,
):
    await _one_event(runtime_pool)  # INSERT (and the position sequence) is allowed
    assert await runtime_pool.fetchval("SELECT count(*) FROM events") == 1
    for statement in (
        "UPDATE events SET reason = 'rewritten'",
        "DELETE FROM events",
        "TRUNCATE events",
        "SELECT setval(pg_get_serial_sequence('events', 'position'), 1)",
        "INSERT INTO schema_migrations (name) VALUES ('shared/999_forged.sql')",
        "UPDATE schema_migrations SET name = name",
    ):
        with pytest.raises(REFUSED):
            await runtime_pool.execute(statement)
    assert await runtime_pool.fetchval("SELECT count(*) FROM events") == 1


async def test_the_runtime_role_cannot_drop_or_disable_the_guards_or_change_the_schema(
    runtime_pool: asyncpg.Pool,
):
    for statement in (
        "ALTER TABLE events DISABLE TRIGGER events_append_only",
        "DROP TRIGGER events_append_only ON events",
        "DROP TRIGGER events_no_truncate ON events",
        "DROP TABLE events",
        "ALTER TABLE events DROP COLUMN hash",
        "CREATE TABLE forged (x int)",
        "CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger"
        " AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql",
    ):
        with pytest.raises(REFUSED):
            await runtime_pool.execute(statement)
    async with runtime_pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "cellbank_runtime"
        assert await role_is_privileged(conn) == ""


async def test_truncate_is_refused_by_the_trigger_even_for_the_administrator(pool: asyncpg.Pool):
    await _one_event(pool)
    with pytest.raises(asyncpg.RaiseError, match="append-only: TRUNCATE refused"):
        await pool.execute("TRUNCATE events")
    assert await pool.fetchval("SELECT count(*) FROM events") == 1


async def test_the_runtime_role_keeps_the_bookkeeping_of_relay_projections_and_parking(
    runtime_pool: asyncpg.Pool,
):
    tables = await runtime_pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        " AND table_name NOT IN ('events', 'schema_migrations')"
    )
    assert {"relay_checkpoints", "projection_checkpoints"} <= {t["table_name"] for t in tables}
    for t in tables:
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert await runtime_pool.fetchval(
                "SELECT has_table_privilege(current_user, $1, $2)", t["table_name"], privilege
            ), (t["table_name"], privilege)
    await runtime_pool.execute(
        "INSERT INTO relay_checkpoints (relay_name, position) VALUES ('r', 1)"
        " ON CONFLICT (relay_name) DO UPDATE SET position = 2"
    )


async def test_tables_of_a_later_migration_get_the_runtime_grants(
    endpoints: Endpoints, database: str, tmp_path: Path
):
    logins = endpoints.database_logins
    assert logins is not None
    later = tmp_path / "svc" / "migrations"
    later.mkdir(parents=True)
    (later / "001_later.sql").write_text("CREATE TABLE later_rows (id bigserial, note text);")
    name = database.rsplit("/", 1)[1]
    owner = await create_pool(with_database(logins.owner_url, name), max_size=1)
    try:
        applied = await migrate(
            owner,
            migration_files(SHARED_MIGRATIONS, later),
            grants=lambda c: apply_grants(c, logins.roles),
        )
        assert applied == ["svc/001_later.sql"]  # the owner may migrate
        assert await owner.fetchval(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'events'"
        ) == ("cellbank_owner")
    finally:
        await owner.close()
    runtime = await create_pool(with_database(logins.runtime_url, name), max_size=1)
    reader = await create_pool(with_database(logins.reader_url, name), max_size=1)
    try:
        await runtime.execute("INSERT INTO later_rows (note) VALUES ('a')")
        await runtime.execute("UPDATE later_rows SET note = 'b'")
        assert await reader.fetchval("SELECT note FROM later_rows") == "b"
        with pytest.raises(REFUSED):
            await reader.execute("DELETE FROM later_rows")
        with pytest.raises(REFUSED):
            await reader.execute("INSERT INTO events SELECT * FROM events")
        await runtime.execute("DELETE FROM later_rows")
        with pytest.raises(REFUSED):
            await runtime.execute("TRUNCATE later_rows")
    finally:
        await runtime.close()
        await reader.close()


async def test_no_role_but_the_networks_connects_to_a_site_database(endpoints: Endpoints):
    from deploy.infra import ensure_site_databases
    from shared.db import drop_database

    logins = endpoints.database_logins
    assert logins is not None
    site = f"Q{uuid.uuid4().hex[:2].upper()}"
    names = await ensure_site_databases(endpoints.database_url, [site], ["storage"], logins.roles)
    admin = await asyncpg.connect(with_database(endpoints.database_url, "postgres"))
    stranger = f"stranger_{uuid.uuid4().hex[:6]}"
    try:
        await admin.execute(f"CREATE ROLE {stranger} LOGIN PASSWORD 'stranger-password-1'")
        with pytest.raises(REFUSED):
            await asyncpg.connect(with_database(endpoints.database_url, names[0]), user=stranger)
        owner = await admin.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", names[0]
        )
        assert owner == "cellbank_owner"
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {stranger}")
        await admin.close()
        for name in names:
            await drop_database(endpoints.database_url, name)
