"""PostgreSQL plumbing: pools, databases per site and service, numbered SQL migrations."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

SHARED_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_DB_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_MIGRATION_LOCK = 0x43454C4C  # "CELL": serialises concurrent migrators of one database


def database_name(site_id: str, service: str) -> str:
    """The database of one service at one site, e.g. cellbank_lon_storage."""
    name = f"cellbank_{site_id}_{service}".lower()
    if not _DB_NAME.match(name):
        raise ValueError(f"site/service give an invalid database name: {name!r}")
    return name


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


async def ensure_database(server_url: str, dbname: str, *, owner: str = "") -> None:
    """Create the database if it does not exist (idempotent, safe to race); `owner`: the role
    owning it (default: the connecting role)."""
    if not _DB_NAME.match(dbname):
        raise ValueError(f"invalid database name: {dbname!r}")
    if owner and not _DB_NAME.match(owner):
        raise ValueError(f"invalid owner role: {owner!r}")
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname)
        if not exists:
            try:
                await conn.execute(
                    f'CREATE DATABASE "{dbname}"' + (f' OWNER "{owner}"' if owner else "")
                )
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await conn.close()


async def drop_database(server_url: str, dbname: str) -> None:
    """Drop a database, closing its other sessions first (tests and site rebuilds)."""
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """An asyncpg pool; the caller closes it."""
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
    assert pool is not None
    return pool


def migration_files(*folders: Path) -> list[Path]:
    """Numbered .sql files of the given folders, shared ones first, each folder in order."""
    return [f for folder in folders for f in sorted(folder.glob("[0-9][0-9][0-9]_*.sql"))]


async def migrate(
    pool: asyncpg.Pool,
    files: Iterable[Path] | None = None,
    *,
    grants: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> list[str]:
    """Apply migrations not yet applied; returns the names applied now. `grants` (e.g.
    shared.db_roles.apply_grants) runs in the same transaction after them, every time."""
    files = list(files) if files is not None else migration_files(SHARED_MIGRATIONS)
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in files:
            name = f"{path.parent.parent.name}/{path.name}"
            if name in done:
                continue
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
        if grants is not None:
            await grants(conn)
    return applied_now


# Failures of the database itself, not of the data: retry the work, never dead-letter it.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.QueryCanceledError,
    asyncpg.LockNotAvailableError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # A connection broken mid-operation while the server shuts down can leave asyncpg's
    # protocol in a state it reports as "another operation is in progress": the connection's
    # fault, not the data's (seen in the fault tests' PostgreSQL outage).
    asyncpg.InternalClientError,
)
