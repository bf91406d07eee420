"""The one entry point to the network's infrastructure: Kafka, PostgreSQL, Keycloak, topics,
databases.

Used by `make run` (deploy/run.py), by the tests' session fixture (tests/support/plugin.py) and
by bench and developer tools. With CELLBANK_KAFKA_BOOTSTRAP / CELLBANK_DATABASE_URL /
CELLBANK_OIDC_ISSUER set, nothing is started for that part and the given server is used (an
external issuer must hold the demo realm's identities: import deploy/keycloak/cellbank-realm.json).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy import identities
from deploy.database_logins import DatabaseLogins, provision_logins
from deploy.kafka_provision import principal_env, provision_network
from deploy.keycloak import Identity, LocalKeycloak
from deploy.local_kafka import LocalKafka, kafka_libs
from deploy.local_postgres import LocalPostgres
from deploy.processes import REPO_ROOT, run_async
from shared.db import database_name, ensure_database
from shared.db_roles import DatabaseRoles, adopt_database
from shared.kafka_admin import ensure_topics
from shared.kafka_clients import KafkaSecurity
from shared.topics import SERVICES

DEFAULT_SITES = ("LON", "MAN", "EDI")
NO_IDENTITY = Identity("")


@dataclass(frozen=True, slots=True)
class Endpoints:
    kafka_bootstrap: str
    database_url: str  # server URL; each service uses its own database on it
    identity: Identity = NO_IDENTITY  # the OIDC issuer tokens come from
    # The Kafka principals' password files (deploy/kafka_provision.py); "" when the environment's
    # CELLBANK_KAFKA_* credentials are the only ones there are (an external cluster).
    kafka_credentials: str = ""
    kafka_local: bool = True  # the credentials are the local broker's (SASL_PLAINTEXT)
    # The owner/runtime/reader roles on that server (database_url is the administrator's).
    database_logins: DatabaseLogins | None = None

    def kafka_env(self, principal: str) -> dict[str, str]:
        """CELLBANK_KAFKA_* for a process running as this principal ({} = inherit the caller's)."""
        if not self.kafka_credentials:
            return {}
        return principal_env(Path(self.kafka_credentials), principal, local=self.kafka_local)

    def kafka_security(self, principal: str) -> KafkaSecurity:
        """How a client in this process authenticates as the principal."""
        return KafkaSecurity.from_env({**os.environ, **self.kafka_env(principal)})


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
        sites: Sequence[str] = DEFAULT_SITES,
    ) -> None:
        env = os.environ if env is None else env
        self.sites = tuple(sites)  # whose site-service principals the broker gets
        self.external_kafka = env.get("CELLBANK_KAFKA_BOOTSTRAP", "").strip() or None
        # With an external cluster: the principals' password files, if it was provisioned
        # with `python -m deploy.kafka_provision --credentials DIR`.
        self.external_credentials = env.get("CELLBANK_KAFKA_CREDENTIALS_DIR", "").strip()
        self.provision_seconds = 0.0
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
        credentials = self.external_credentials or (
            str(self.kafka.credentials) if self.kafka and self.kafka.authenticated else ""
        )
        return Endpoints(
            kafka,
            db,
            identity,
            credentials,
            kafka_local=not self.external_kafka,
            database_logins=self.database_logins,
        )

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
        admin = self.kafka.admin_security if self.kafka else KafkaSecurity.from_env()
        # Passwords generated once and kept beside the data (0600) for this run's services.
        self.database_logins = await provision_logins(
            self.endpoints.database_url, self.root / "database-roles.json"
        )
        created = await ensure_topics(
            self.endpoints.kafka_bootstrap,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            security=admin,
        )
        if created:
            print(f"[cellbank] created topics: {', '.join(created)}", flush=True)
        if self.kafka is not None and self.kafka.authenticated:
            # Every start: the log may come from an earlier run with other sites or rules.
            self.provision_seconds = await asyncio.to_thread(
                provision_network,
                kafka_libs(),
                self.kafka.bootstrap,
                admin,
                self.kafka.credentials,
                self.sites,
            )

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
