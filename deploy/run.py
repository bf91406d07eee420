"""`make run`: the network on one machine. Starts Kafka and PostgreSQL (unless given), creates
the topics and every site's service databases, and stops everything on Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from deploy.infra import DEFAULT_SITES, Infrastructure, ensure_site_databases
from deploy.processes import (
    REPO_ROOT,
    InfraError,
    claim,
    port_is_open,
    reap_abandoned,
    run_async,
)
from shared.db import create_pool, database_name, migrate, with_database
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
        "--exit-when-ready", action="store_true", help="start, provision, report, then stop"
    )
    return parser.parse_args(argv)


async def provision(server_url: str, sites: list[str]) -> list[str]:
    """Every site's service databases, migrated (event store + projection bookkeeping)."""
    names = await ensure_site_databases(server_url, sites, SERVICES)
    for site in sites:
        for service in SERVICES:
            pool = await create_pool(
                with_database(server_url, database_name(site, service)), max_size=1
            )
            try:
                await migrate(pool)
            finally:
                await pool.close()
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sites = [s.strip().upper() for s in args.sites.split(",") if s.strip()]
    reap_abandoned(args.root.parent, args.root.name, remove=False)  # a previous run killed hard
    claim(args.root)
    infra = Infrastructure(args.root, kafka_port=args.kafka_port, postgres_port=args.postgres_port)
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
    try:
        endpoints = infra.start()
        databases = run_async(lambda: provision(endpoints.database_url, sites))
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print(
            "\n[cellbank] the network's infrastructure is up:\n"
            f"  Kafka      {endpoints.kafka_bootstrap}   (topics: cellbank.*.v1)\n"
            f"  PostgreSQL {endpoints.database_url}\n"
            f"  databases  {len(databases)} ({', '.join(sites)} x {', '.join(SERVICES)})\n"
            "  services   none yet: the bank services arrive with the next issues; this run\n"
            "             provides the infrastructure they will use.\n"
            "  Point your own tools at it with:\n"
            f"    export CELLBANK_KAFKA_BOOTSTRAP={endpoints.kafka_bootstrap}\n"
            f"    export CELLBANK_DATABASE_URL={endpoints.database_url}\n"
            "[cellbank] press Ctrl-C to stop everything.",
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
        infra.stop()
    print("[cellbank] stopped; nothing left running.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
