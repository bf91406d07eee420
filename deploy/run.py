"""`make run`: the network on one machine. Starts Kafka and PostgreSQL (unless given), creates
the topics and every site's databases, starts every site's services, seeds demo data, and stops
everything on Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cellbank.storage.v1 import storage_service_pb2_grpc as spb_grpc

from deploy.demo import (
    BankClient,
    available_units,
    free_demo_positions,
    register_demo_tank,
    released_batch,
    store_in_free_position,
    tank_stock,
)
from deploy.demo_population import demo_donor
from deploy.identities import DemoRealm, demo_realm
from deploy.infra import DEFAULT_SITES, Endpoints, Infrastructure, ensure_site_databases
from deploy.kafka_principals import DASHBOARD, OPERATOR
from deploy.keycloak import Identity
from deploy.network import (
    NetworkProcess,
    ServiceProcess,
    cold_chain,
    dashboard_process,
    plan,
    simulator_process,
)
from deploy.processes import (
    REPO_ROOT,
    InfraError,
    claim,
    free_port,
    port_is_open,
    reap_abandoned,
    run_async,
)
from deploy.trust_keys import ensure_site_keys
from shared.db import create_pool, database_name, migrate, with_database
from shared.db_roles import DatabaseRoles, apply_grants
from shared.topics import SERVICES


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT / ".cellbank" / "run")
    parser.add_argument(
        "--kafka-port", type=int, default=int(env.get("CELLBANK_KAFKA_PORT", "9092"))
    )
    parser.add_argument(
        "--postgres-port", type=int, default=int(env.get("CELLBANK_POSTGRES_PORT", "54329"))
    )
    parser.add_argument("--sites", default=env.get("CELLBANK_SITES", ",".join(DEFAULT_SITES)))
    parser.add_argument(
        "--grpc-base-port", type=int, default=int(env.get("CELLBANK_GRPC_BASE_PORT", "50100"))
    )
    parser.add_argument(
        "--metrics-base-port", type=int, default=int(env.get("CELLBANK_METRICS_BASE_PORT", "9300"))
    )
    parser.add_argument(
        "--endpoints-file",
        type=Path,
        help="where to write the endpoints for `cellbank` and other tools while running "
        "(default: endpoints.json next to --root, i.e. .cellbank/endpoints.json)",
    )
    parser.add_argument("--no-demo", action="store_true", help="do not seed the demo data")
    parser.add_argument(
        "--donors", type=int, default=int(env.get("CELLBANK_DONORS", "2")),
        help="donors the simulator takes to stored units at every site at start (2 units each)",
    )  # fmt: skip
    parser.add_argument(
        "--simulator-interval", type=float,
        default=float(env.get("CELLBANK_SIMULATOR_INTERVAL", "30")),
        help="seconds between new donors afterwards (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--courier-minutes", type=float, default=1.0, help="dispatch → delivered (demo clock)"
    )
    parser.add_argument("--no-simulator", action="store_true", help="no simulated bank activity")
    parser.add_argument(
        "--dashboard-port", type=int, default=int(env.get("CELLBANK_DASHBOARD_PORT", "8080"))
    )
    parser.add_argument(
        "--exit-when-ready", action="store_true", help="start, provision, report, then stop"
    )
    return parser.parse_args(argv)


async def provision(endpoints: Endpoints, sites: list[str]) -> list[str]:
    """Every site's service databases, migrated by the owner role (event store + projection
    bookkeeping) with the runtime role's grants."""
    logins = endpoints.database_logins
    server_url = endpoints.database_url
    names = await ensure_site_databases(
        server_url, sites, SERVICES, logins.roles if logins else None
    )
    for site in sites:
        for service in SERVICES:
            dbname = database_name(site, service)
            pool = await create_pool(
                with_database(logins.owner_url if logins else server_url, dbname), max_size=1
            )
            try:
                await migrate(
                    pool, grants=(lambda c: apply_grants(c, logins.roles)) if logins else None
                )
            finally:
                await pool.close()
    return names


async def _all_serving(services: list[ServiceProcess]) -> None:
    await asyncio.gather(*(s.wait_serving() for s in services))


DEMO_STOCK = 2  # available units the demo keeps in the first site's tank


async def seed_demo(services: list[ServiceProcess], sites: list[str]) -> str:
    """A tank at every site; at the first site, if its tank holds fewer than DEMO_STOCK
    available units (a first run, or an earlier run's units were ordered), one more demo donor
    through to released units, stored in free positions. So a run on an earlier run's data
    resumes: it seeds only what is missing."""
    by = {(s.site, s.service): s for s in services}
    first = sites[0]
    tank = f"{first}-T1"
    for site in sites:
        async with grpc.aio.insecure_channel(by[(site, "storage")].address) as channel:
            await register_demo_tank(spb_grpc.StorageServiceStub(channel), f"{site}-T1")
    async with (
        grpc.aio.insecure_channel(by[(first, "donor_intake")].address) as d,
        grpc.aio.insecure_channel(by[(first, "manufacturing")].address) as m,
        grpc.aio.insecure_channel(by[(first, "storage")].address) as st,
    ):
        storage = spb_grpc.StorageServiceStub(st)
        stock = await tank_stock(storage, tank)
        available = available_units(stock, datetime.now(UTC))
        if len(available) >= DEMO_STOCK:
            return f"{first}: {len(available)} units in {tank} from an earlier run, nothing to seed"
        free = free_demo_positions(tank, stock)
        if not free:
            return f"{first}: {tank} is full, no new demo batch"
        # The n-th demo batch of a site always comes from the n-th demo donor (one DIN each).
        donor = demo_donor(first, len({u.din for u in stock}))
        released = await released_batch(BankClient.over(d, m), donor)
        stored = [
            unit.unit_id
            for unit in released.units
            if await store_in_free_position(storage, unit.unit_id, free) is not None
        ]
    units = ", ".join(u.unit_id for u in released.units)
    full = "" if len(stored) == len(released.units) else f" ({len(stored)} of them: tank full)"
    return f"{first}: batch {released.batch_id} released into {units}, stored in {tank}{full}"


async def seed_demo_or_explain(services: list[ServiceProcess], sites: list[str]) -> str:
    """seed_demo, with a refusal or a timeout of the services as one line (InfraError)."""
    try:
        return await seed_demo(services, sites)
    except grpc.aio.AioRpcError as err:
        raise InfraError(
            f"seeding the demo data failed: {err.code().name}: {err.details()}"
            " (the services' logs say more; --no-demo starts without it)"
        ) from err
    except TimeoutError as err:
        raise InfraError(f"seeding the demo data failed: {err}") from err


def endpoints_document(
    services: list[ServiceProcess],
    sites: list[str],
    kafka_bootstrap: str,
    database_url: str = "",
    dashboard: str = "",
    trust_list: str = "",
    *,
    identity: Identity,
    kafka_env: Mapping[str, str] | None = None,
    database_roles: DatabaseRoles | None = None,
    chain_keys: str = "",
) -> dict[str, Any]:
    """What tools need to reach the running network (`cellbank`, hospital clients): every
    site's service addresses plus the public aliases, the identity provider, the demo realm's
    hospitals (client credentials, clinicians; home sites spread over the sites in order) and
    staff, Kafka (and the read-only operator principal's CELLBANK_KAFKA_* settings, its password
    by file). The credentials are the demo realm's: this file exists only for a local run."""
    by_site: dict[str, dict[str, str]] = {site: {} for site in sites}
    for s in services:
        by_site[s.site][s.service] = s.address
    for entries in by_site.values():
        entries["hospital_api"] = entries["matching"]  # HospitalService is served by matching
        entries["operator_api"] = entries["storage"]  # any service serves OperatorService
    realm = demo_realm()
    return {
        "identity": identity.as_json(),
        "sites": by_site,
        "hospitals": demo_hospitals(realm, sites, by_site),
        "users": demo_staff(realm),
        "kafka": kafka_bootstrap,
        "kafka_env": dict(kafka_env or {}),
        "database_url": database_url,  # the PostgreSQL server (`cellbank replay` rebuilds sites)
        # Role names only (a restore hands the rebuilt databases back to the owner role).
        "database_roles": dataclasses.asdict(database_roles) if database_roles else {},
        "dashboard": dashboard,
        "trust_list": trust_list,  # the network's trust list (`cellbank watch`, replay, dashboard)
        "chain_keys": chain_keys,  # the stores' chain keys (`cellbank replay --restore` verifies)
    }


def demo_hospitals(
    realm: DemoRealm, sites: list[str], by_site: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    """Each hospital of the realm: its system's client and its clinicians' sign-ins."""
    hospitals = sorted({c.hospital for c in realm.clients.values() if c.hospital})
    documents = []
    for i, hospital in enumerate(hospitals):
        home = sites[i % len(sites)]
        client = realm.hospital_client(hospital)
        documents.append(
            {
                "id": hospital,
                "home_site": home,
                "hospital_api": by_site[home]["hospital_api"],
                "client_id": client.client_id,
                "client_secret": client.secret,
                "clinicians": [
                    {"username": u.username, "password": u.password, "name": u.name}
                    for u in realm.clinicians(hospital)
                ],
            }
        )
    return documents


STAFF_ROLES = frozenset({"operator", "qa", "courier"})


def demo_staff(realm: DemoRealm) -> list[dict[str, Any]]:
    """The realm's operators, QA staff and couriers (people who sign in with `cellbank login`)."""
    return [
        {
            "username": u.username,
            "password": u.password,
            "name": u.name,
            "roles": list(u.roles),
            "site": u.site,
        }
        for u in realm.users.values()
        if STAFF_ROLES.intersection(u.roles)
    ]


def write_endpoints_file(path: Path, document: dict[str, Any]) -> None:
    """Atomically (write, then rename), so a tool reading it never sees half a file; readable
    by its owner only, since it holds the demo realm's passwords and client secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(json.dumps(document, indent=2) + "\n")
    os.replace(partial, path)


def _summary(
    endpoints: Endpoints,
    sites: list[str],
    databases: list[str],
    services: list[ServiceProcess],
    demo: str,
    root: Path,
    endpoints_file: Path,
) -> str:
    lines = [
        "",
        "[cellbank] the network is up:",
        f"  Kafka      {endpoints.kafka_bootstrap}   (topics: cellbank.*.v1)",
        f"  PostgreSQL {endpoints.database_url}   ({len(databases)} site/service databases)",
        "  services   (gRPC with health + reflection; metrics on /metrics)",
    ]
    lines += [
        f"    {s.site} {s.service:<14} grpc 127.0.0.1:{s.grpc_port}  metrics :{s.metrics_port}"
        for s in services
    ]
    lines += [
        f"  demo data  {demo or 'skipped (--no-demo)'}",
        "  cold chain Faust monitor on cellbank.telemetry.v1 + simulated sensors for "
        + ", ".join(f"{site}-T1" for site in sites),
        "  hospitals  HospitalService (cellbank.hospital.v1) at each site's matching: "
        + ", ".join(
            f"{s.site} 127.0.0.1:{s.grpc_port}" for s in services if s.service == "matching"
        ),
        f"  identity   OIDC issuer {endpoints.identity.issuer}",
        "             sign in: `cellbank login` (a browser), or for the demo "
        "`cellbank login --username alice --password demo-alice`",
        "             demo people (operators, QA, couriers, clinicians) and hospital clients "
        "with their passwords/secrets: the endpoints file",
        f"  logs       {root / 'logs'}",
        f"  endpoints  {endpoints_file}   (for `cellbank`, hospital clients and the simulator)",
        "  Point your own tools at it with:",
        f"    export CELLBANK_KAFKA_BOOTSTRAP={endpoints.kafka_bootstrap}",
        *(f"    export {k}={v}" for k, v in endpoints.kafka_env(OPERATOR).items() if v),
        f"    export CELLBANK_DATABASE_URL={endpoints.database_url}",
        f"  sites      {', '.join(sites)}",
        "[cellbank] press Ctrl-C to stop everything.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sites = [s.strip().upper() for s in args.sites.split(",") if s.strip()]
    reap_abandoned(args.root.parent, args.root.name, remove=False)  # a previous run killed hard
    claim(args.root)
    infra = Infrastructure(
        args.root, kafka_port=args.kafka_port, postgres_port=args.postgres_port, sites=sites
    )
    for server, port in (
        ("Kafka", infra.kafka and args.kafka_port),
        ("PostgreSQL", infra.postgres and args.postgres_port),
    ):
        if port and port_is_open("127.0.0.1", port):
            print(
                f"error: port {port} for {server} is in use; set CELLBANK_{server.upper()}_PORT",
                file=sys.stderr,
            )
            return 2
    stop = threading.Event()
    # While starting, Ctrl-C or SIGTERM interrupts (KeyboardInterrupt) and the finally below
    # stops whatever had started; once up, they just end the wait.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Each site's signing key and the network's trust list: made once, kept across runs.
    trust = ensure_site_keys(args.root / "trust", sites)
    services = plan(sites, args.grpc_base_port, args.metrics_base_port, trust)
    endpoints_file: Path = args.endpoints_file or args.root.parent / "endpoints.json"
    extras: list[NetworkProcess] = []
    try:
        endpoints = infra.start()
        databases = run_async(lambda: provision(endpoints, sites))
        for service in services:
            service.start(endpoints, args.root / "logs")
        run_async(lambda: _all_serving(services))
        ready_after = time.monotonic() - started
        dashboard_port = args.dashboard_port
        if port_is_open("127.0.0.1", dashboard_port):
            dashboard_port = free_port()  # 8080 taken: any free port (the file says which)
        dashboard_url = f"http://127.0.0.1:{dashboard_port}/"
        write_endpoints_file(
            endpoints_file,
            endpoints_document(
                services,
                sites,
                endpoints.kafka_bootstrap,
                endpoints.database_url,
                dashboard_url,
                identity=endpoints.identity,
                kafka_env=endpoints.kafka_env(OPERATOR),
                database_roles=(
                    endpoints.database_logins.roles if endpoints.database_logins else None
                ),
                trust_list=str(trust.trust_list_file),
                chain_keys=str(args.root / "chain-keys"),
            ),
        )
        demo = "" if args.no_demo else run_async(lambda: seed_demo_or_explain(services, sites))
        extras = cold_chain(endpoints, services, [f"{site}-T1" for site in sites], args.root, trust)
        extras.append(
            dashboard_process(endpoints_file, dashboard_port, endpoints.kafka_env(DASHBOARD), trust)
        )
        if not args.no_simulator:
            extras.append(
                simulator_process(
                    endpoints_file, args.donors, args.simulator_interval, args.courier_minutes
                )
            )
        for extra in extras:
            extra.start(args.root / "logs")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        summary = _summary(endpoints, sites, databases, services, demo, args.root, endpoints_file)
        print(summary, flush=True)
        print(
            f"[cellbank] dashboard {dashboard_url}   first endpoint ready {ready_after:.1f}s after"
            f" start; all up in {time.monotonic() - started:.1f}s",
            flush=True,
        )
        if not args.exit_when_ready:
            stop.wait()
        print("[cellbank] stopping…", flush=True)
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[cellbank] interrupted while starting; stopping…", flush=True)
        return 130
    finally:
        endpoints_file.unlink(missing_ok=True)  # nothing to reach any more
        for extra in extras:
            extra.stop()
        for service in reversed(services):
            service.stop()
        infra.stop()
    print("[cellbank] stopped; nothing left running.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
