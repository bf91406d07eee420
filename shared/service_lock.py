"""A running service holds a lock in its database for its lifetime: restore asks who holds it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from shared.db import with_database

# pg_advisory_lock key ("SERV"), per database: one service database, one holder at a time is
# not required (replicas may share a database), so it is taken in shared mode.
SERVICE_LOCK = 0x53455256
APPLICATION_PREFIX = "cellbank-service"


@dataclass(frozen=True, slots=True)
class RunningService:
    database: str
    application: str  # e.g. "cellbank-service LON storage"
    client: str  # address the holder connects from ("local" for a Unix socket)
    since: str  # when its session started

    def __str__(self) -> str:
        return (
            f"{self.application} (database {self.database}, from {self.client}, since {self.since})"
        )


def application_name(site_id: str, service: str) -> str:
    """How a service names its sessions in pg_stat_activity."""
    return f"{APPLICATION_PREFIX} {site_id} {service}"


async def hold_service_lock(url: str, site_id: str, service: str) -> asyncpg.Connection:
    """A session holding the service's lock (shared) in its database until it is closed."""
    conn = await asyncpg.connect(
        url, server_settings={"application_name": application_name(site_id, service)}
    )
    try:
        await conn.execute("SELECT pg_advisory_lock_shared($1)", SERVICE_LOCK)
    except BaseException:
        await conn.close()
        raise
    return conn


async def running_services(server_url: str, databases: Iterable[str]) -> list[RunningService]:
    """The services holding their lock in any of these databases (their sessions are live)."""
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        rows = await conn.fetch(
            "SELECT d.datname, a.application_name, coalesce(host(a.client_addr), 'local') AS client,"
            " to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS since"
            " FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1"
            " AND l.objsubid = 1 AND d.datname = ANY($2::text[])"
            " ORDER BY d.datname, a.backend_start",
            SERVICE_LOCK,
            list(databases),
        )
    finally:
        await conn.close()
    return [
        RunningService(r["datname"], r["application_name"], r["client"], r["since"]) for r in rows
    ]


class ServicesRunning(RuntimeError):
    """A site's services still run on the databases an operation would replace."""

    def __init__(self, site_id: str, running: list[RunningService]) -> None:
        self.running = running
        names = "; ".join(str(r) for r in running)
        super().__init__(
            f"{site_id}'s services are running: {names}. Stop them before --restore "
            "(a restore replaces their databases under them)"
        )
