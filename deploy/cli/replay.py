"""`cellbank replay`: rebuild a site from the Kafka log, verify its digests, or restore it."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deploy.cli.calls import DEFAULT_TIMEOUT
from deploy.cli.console import Streams
from deploy.cli.endpoints import (
    NetworkEndpoints,
    kafka_credentials_of,
    load_endpoints,
    trust_list_path,
)
from deploy.cli.errors import CliError
from deploy.cli.options import Endpoints, Kafka, OneSite, Timeout, streams

if TYPE_CHECKING:
    from shared.chain_key import ChainKey

CHAIN_KEYS_DIR_ENV = "CELLBANK_CHAIN_KEYS_DIR"  # a folder of <SITE>.<service>.key (restore)
REPLAY_HELP = "rebuild a site from the Kafka log (progress, events/s) and verify its digest"


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay and how: the options of `cellbank replay`."""

    site: str
    verify: bool = False
    restore: bool = False
    force: bool = False
    keep: bool = False
    settle: float = 30.0
    kafka: str | None = None
    database_url: str | None = None
    chain_keys: str | None = None


def register(app: typer.Typer) -> None:
    app.command(
        "replay", short_help=REPLAY_HELP,
        help="Rebuild every service of a site from the log into fresh databases (its "
        "projections), with a progress bar; --verify compares a deterministic state digest of "
        "each read model with the live site (exit 1 naming what differs). --restore rebuilds a "
        "site whose databases are gone into its own databases, its events included.",
    )(replay_command)  # fmt: skip


def replay_command(
    ctx: typer.Context,
    site: OneSite,
    endpoints: Endpoints = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    verify: Annotated[bool, typer.Option("--verify", help="compare with the live site")] = False,
    restore: Annotated[
        bool, typer.Option("--restore", help="rebuild a lost site in place")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="with --restore: even if stores exist")
    ] = False,
    keep: Annotated[bool, typer.Option("--keep", help="keep the scratch databases")] = False,
    settle: Annotated[
        float,
        typer.Option(
            metavar="SETTLE", show_default=False, help="seconds the live site may take to catch up"
        ),
    ] = 30.0,
    kafka: Kafka = None,
    database_url: Annotated[
        str | None,
        typer.Option(metavar="DATABASE_URL", help="PostgreSQL server URL (default: the file)"),
    ] = None,
    chain_keys: Annotated[
        str | None,
        typer.Option(
            metavar="CHAIN_KEYS",
            help=f"with --restore: the stores' chain keys (default: ${CHAIN_KEYS_DIR_ENV})",
        ),
    ] = None,
) -> int:
    request = ReplayRequest(
        site, verify, restore, force, keep, settle, kafka, database_url, chain_keys
    )
    return replay(streams(ctx), endpoints, request)


def _infra_of(endpoints: NetworkEndpoints, request: ReplayRequest) -> tuple[str, str]:
    bootstrap = (
        request.kafka
        or os.environ.get("CELLBANK_KAFKA_BOOTSTRAP", "")
        or str(endpoints.document.get("kafka", ""))
    )
    server = (
        request.database_url
        or os.environ.get("CELLBANK_DATABASE_URL", "")
        or str(endpoints.document.get("database_url", ""))
    )
    if not bootstrap or not server:
        raise CliError(
            "replay needs Kafka and PostgreSQL: pass --kafka and --database-url, set "
            "CELLBANK_KAFKA_BOOTSTRAP / CELLBANK_DATABASE_URL, or use the file make run writes"
        )
    return bootstrap, server


def replay(io: Streams, endpoints_file: str | None, request: ReplayRequest) -> int:
    """Rebuild a site from the log; --verify compares its digests with the live site."""
    import asyncio

    from deploy.replay import replay_site, specs
    from shared.db import database_name
    from shared.db_roles import DatabaseRoles, hand_over
    from shared.replay import RestoreRefused, differences, site_digests
    from shared.service_lock import ServicesRunning, running_services

    endpoints = load_endpoints(endpoints_file)
    if not request.site:
        raise CliError("--site is required")
    site = endpoints.site_names(request.site)[0]
    bootstrap, server = _infra_of(endpoints, request)
    from_file = not (request.kafka or os.environ.get("CELLBANK_KAFKA_BOOTSTRAP"))
    services = list(specs())
    # The site's databases: shared.db.database_name, unless the file names them ("databases").
    named = endpoints.document.get("databases", {}).get(site, {})
    live = {name: named.get(name) or database_name(site, name) for name in services}
    if request.restore:
        targets = live
    else:
        suffix = uuid.uuid4().hex[:6]
        targets = {name: f"cellbank_replay_{site.lower()}_{name}_{suffix}" for name in services}

    async def run() -> int:
        from shared.db import drop_database

        if request.restore and (running := await running_services(server, list(live.values()))):
            raise CliError(str(ServicesRunning(site, running)), code=1)
        if request.restore and not request.force:
            present = await _databases_with_events(server, list(live.values()))
            if present:
                raise CliError(
                    f"{site} still has event stores ({', '.join(present)}): --restore rebuilds a "
                    "site whose databases are gone (stop its services and drop them, or --force)"
                )
        trust_list_file = trust_list_path(endpoints)
        chain_keys = restore_keys(endpoints, request, site, services) if request.restore else None
        try:
            with io.progress() as progress:
                result = await replay_site(
                    site, bootstrap=bootstrap, server_url=server, targets=targets,
                    restore_events_from_log=request.restore, progress=progress,
                    trust_list_file=trust_list_file, chain_keys=chain_keys,
                )  # fmt: skip
        except RestoreRefused as refused:
            raise CliError(f"restore {refused}", code=1) from None
        if request.restore and (roles := endpoints.document.get("database_roles")):
            for dbname in targets.values():  # the owner role's again, the runtime's grants
                await hand_over(server, dbname, DatabaseRoles(**roles))
        io.print(
            f"{site}: {result.records_replayed:,} records replayed in {result.seconds:.1f}s"
            f" ({result.rate:,.0f} events/s)"
            + (
                f"; {sum(result.events_restored.values()):,} own events restored"
                if request.restore
                else ""
            )
        )
        skipped = sum(n for reasons in result.untrusted.values() for n in reasons.values())
        if skipped:
            io.print(f"{site}: {skipped:,} untrusted record(s) skipped (not applied; see above)")
        code = 0
        try:
            if request.verify and not request.restore:
                replayed = await site_digests(server, targets, with_events=False)
                # The live site may still be reading the last records the replay read: give it
                # a moment (a site busy with new events keeps differing, and says so).
                deadline = time.monotonic() + request.settle
                while True:
                    live_digests = await site_digests(server, live, with_events=False)
                    differ = differences(live_digests, replayed)
                    if not differ or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1.0)
                for key in sorted(live_digests):
                    io.print(f"  {key:<44} {'DIFFERS' if key in differ else 'OK'}")
                if differ:
                    io.print(f"DIFFERENT: {', '.join(differ)} (if the site was busy, run again)")
                    code = 1
                else:
                    io.print(f"OK: {site} replayed equals live ({len(live_digests)} read models)")
        finally:
            if not request.restore and not request.keep:
                for dbname in targets.values():
                    await drop_database(server, dbname)
        return code

    with kafka_credentials_of(endpoints.document, from_file):
        return asyncio.run(run())


def restore_keys(
    endpoints: NetworkEndpoints, request: ReplayRequest, site: str, services: Sequence[str]
) -> dict[str, ChainKey]:
    """The stores' chain keys a restore recomputes every hash with: --chain-keys DIR, else
    $CELLBANK_CHAIN_KEYS_DIR, else the endpoints file's `chain_keys` (`<SITE>.<service>.key`)."""
    from deploy.chain_keys import ChainKeys
    from shared.errors import InvalidArgument

    folder = (
        request.chain_keys
        or os.environ.get(CHAIN_KEYS_DIR_ENV, "").strip()
        or str(endpoints.document.get("chain_keys", ""))
    )
    if not folder:
        raise CliError(
            "--restore recomputes every hash with the stores' chain keys: pass --chain-keys DIR,"
            f" set {CHAIN_KEYS_DIR_ENV}, or use the file make run writes"
        )
    keys = ChainKeys(Path(folder))
    missing = [s for s in services if not (keys.directory / f"{site}.{s}.key").exists()]
    if missing:
        raise CliError(f"no chain key of {site} {', '.join(missing)} in {folder}")
    try:
        return {s: keys.key(site, s) for s in services}
    except InvalidArgument as exc:
        raise CliError(f"{folder}: {exc}") from None


async def _databases_with_events(server: str, names: list[str]) -> list[str]:
    import asyncpg

    from shared.db import with_database

    present = []
    for name in names:
        try:
            conn = await asyncpg.connect(with_database(server, name))
        except asyncpg.InvalidCatalogNameError:
            continue
        try:
            if await conn.fetchval(
                "SELECT to_regclass('events') IS NOT NULL"
            ) and await conn.fetchval("SELECT count(*) FROM events"):
                present.append(name)
        finally:
            await conn.close()
    return present
