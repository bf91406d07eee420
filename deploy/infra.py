"""The one entry point to the network's infrastructure: Kafka, PostgreSQL, Keycloak, topics,
databases.

Used by `make run` (deploy/run.py), by the tests' session fixture (shared/testing/plugin.py) and
by bench and developer tools. With CELLBANK_KAFKA_BOOTSTRAP / CELLBANK_DATABASE_URL /
CELLBANK_OIDC_ISSUER set, nothing is started for that part and the given server is used (an
external issuer must hold the demo realm's identities: import deploy/keycloak/cellbank-realm.json).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy import identities
from deploy.database_logins import DatabaseLogins, provision_logins
from deploy.keycloak import Identity, LocalKeycloak
from deploy.local_kafka import LocalKafka
from deploy.local_postgres import LocalPostgres
from deploy.processes import REPO_ROOT, run_async
from shared.db import database_name, ensure_database
from shared.db_roles import DatabaseRoles, adopt_database
from shared.kafka_admin import ensure_topics
from shared.topics import SERVICES

DEFAULT_SITES = ("LON", "MAN", "EDI")
NO_IDENTITY = Identity("")


@dataclass(frozen=True, slots=True)
class Endpoints:
    kafka_bootstrap: str
    database_url: str  # server URL; each service uses its own database on it
    identity: Identity = NO_IDENTITY  # the OIDC issuer tokens come from
    # The owner/runtime/reader roles on that server (database_url is the administrator's).
    database_logins: DatabaseLogins | None = None


class Infrastructure:
    """Starts what is not given, stops what it started (in reverse order)."""

    def __init__(
        self,
        root: Path = REPO_ROOT / ".cellbank" / "run",
        *,
        kafka_port: int | None = None,
        postgres_port: int | None = None,
        keycloak_port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.external_kafka = env.get("CELLBANK_KAFKA_BOOTSTRAP", "").strip() or None
        self.external_db = env.get("CELLBANK_DATABASE_URL", "").strip() or None
        # An existing OIDC provider holding the demo realm's identities, or our own Keycloak.
        self.external_issuer = env.get("CELLBANK_OIDC_ISSUER", "").strip().rstrip("/") or None
        self.replication_factor = int(env.get("CELLBANK_TOPIC_REPLICATION_FACTOR", "1"))
        self.partitions = int(env.get("CELLBANK_TOPIC_PARTITIONS", "3"))
        self.kafka = None if self.external_kafka else LocalKafka(root / "kafka", port=kafka_port)
        self.postgres = (
            None if self.external_db else LocalPostgres(root / "pgdata", port=postgres_port)
        )
        self.keycloak = (
            None if self.external_issuer else LocalKeycloak(root / "keycloak", port=keycloak_port)
        )
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.database_logins: DatabaseLogins | None = None

    @property
    def endpoints(self) -> Endpoints:
        kafka = self.external_kafka or (self.kafka.bootstrap if self.kafka else "")
        db = self.external_db or (self.postgres.url if self.postgres else "")
        identity = (
            Identity(self.external_issuer)
            if self.external_issuer
            else (self.keycloak.identity if self.keycloak else NO_IDENTITY)
        )
        return Endpoints(kafka, db, identity, self.database_logins)

    def start(self) -> Endpoints:
        failure: list[BaseException] = []
        keycloak: threading.Thread | None = None
        try:
            # Keycloak first: it starts slowest, in its own JVM while the others start.
            if self.keycloak is not None:
                keycloak = threading.Thread(
                    target=_capturing(self.keycloak.start, failure), name="keycloak", daemon=True
                )
                keycloak.start()
            if self.postgres is not None:
                self.postgres.start()
            if self.kafka is not None:
                self.kafka.start()
            run_async(self._provision)
            if keycloak is not None:
                keycloak.join()
                if failure:
                    raise failure[0]
            identities.configure(self.endpoints.identity)
        except BaseException:
            if keycloak is not None:
                keycloak.join()  # it may still be starting: let it finish, then stop it
            self.stop()
            raise
        return self.endpoints

    async def _provision(self) -> None:
        # Passwords generated once and kept beside the data (0600) for this run's services.
        self.database_logins = await provision_logins(
            self.endpoints.database_url, self.root / "database-roles.json"
        )
        created = await ensure_topics(
            self.endpoints.kafka_bootstrap,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
        )
        if created:
            print(f"[cellbank] created topics: {', '.join(created)}", flush=True)

    def stop(self) -> None:
        try:
            if self.kafka is not None:
                self.kafka.stop()
        finally:
            try:
                if self.postgres is not None:
                    self.postgres.stop()
            finally:
                if self.keycloak is not None:
                    self.keycloak.stop()

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def ensure_site_databases(
    server_url: str,
    sites: Iterable[str] = DEFAULT_SITES,
    services: Iterable[str] = SERVICES,
    roles: DatabaseRoles | None = None,
) -> list[str]:
    """One database per site and service; returns their names. With `roles`, each is the
    owner role's (an existing one is handed over) and only the network's roles connect."""
    names = [database_name(site, service) for site in sites for service in services]
    for name in names:
        await ensure_database(server_url, name, owner=roles.owner if roles else "")
        if roles is not None:
            await adopt_database(server_url, name, roles)
    return names


def _capturing(run: Callable[[], None], failure: list[BaseException]) -> Callable[[], None]:
    def wrapped() -> None:
        try:
            run()
        except BaseException as exc:  # re-raised by the starting thread
            failure.append(exc)

    return wrapped
