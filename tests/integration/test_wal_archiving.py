"""The remedy for the relay's unpublished tail: with WAL archiving on (the deployment files'
settings), every completed WAL segment — committed events included — is copied out of the
server before PostgreSQL may recycle it."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
from pathlib import Path

import asyncpg

from deploy.local_postgres import SERVICE_USER, LocalPostgres
from shared.db import with_database
from shared.waits import eventually

ARCHIVE_SETTINGS = {  # as in docker-compose.yml and deploy/k8s/base/postgres.yaml
    "wal_level": "replica",
    "archive_mode": "on",
    "archive_timeout": "60",
}


async def test_a_switched_wal_segment_lands_in_the_archive(tmp_path: Path):
    archive = tmp_path / "wal-archive"
    archive.mkdir()
    server = LocalPostgres(
        tmp_path / "pgdata",
        settings={
            **ARCHIVE_SETTINGS,
            # test ! -f: never overwrite an archived segment (PostgreSQL's documented recipe)
            "archive_command": f"test ! -f {archive}/%f && cp %p {archive}/%f",
        },
    )
    if os.geteuid() == 0:  # the server runs as its own user (SERVICE_USER): it writes the archive
        server._prepare()  # creates that user and lets it reach tmp_path
        entry = pwd.getpwnam(SERVICE_USER)
        os.chown(archive, entry.pw_uid, entry.pw_gid)
    server.start()
    try:
        conn = await asyncpg.connect(with_database(server.url, "postgres"))
        try:
            await conn.execute("CREATE TABLE committed (note text)")
            await conn.execute("INSERT INTO committed VALUES ('not yet on Kafka')")
            segment = await conn.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())")
            await conn.execute("SELECT pg_switch_wal()")
            await eventually(
                lambda: _archived(archive),
                until=lambda names: segment in names,
                what=f"WAL segment {segment} in the archive",
                timeout=30,
            )
            failed = await conn.fetchval("SELECT failed_count FROM pg_stat_archiver")
            assert failed == 0
        finally:
            await conn.close()
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "pgdata", ignore_errors=True)


async def _archived(folder: Path) -> set[str]:
    return set(await asyncio.to_thread(os.listdir, folder))
