"""pytest plugin: one real Kafka broker, PostgreSQL server and Keycloak per test session,
per-test DBs."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from deploy.infra import Endpoints, Infrastructure
from deploy.kafka_principals import ADMIN
from deploy.local_kafka import LocalKafka
from deploy.processes import REPO_ROOT, claim, reap_abandoned
from shared.db import create_pool, drop_database, ensure_database, migrate, with_database
from shared.db_roles import apply_grants
from shared.kafka_admin import ensure_topics
from shared.topics import TopicSpec
from tests.support.trust import session_trust

STARTED: dict[str, float] = {}  # seconds each part of the session's infrastructure took


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long the session's servers took to start (the closing notes quote it)."""
    if STARTED:
        parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in STARTED.items())
        terminalreporter.write_line(f"cellbank test infrastructure started: {parts}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (a CI timeout, a killed terminal) unwinds like Ctrl-C, so session fixtures
    # still stop the servers they started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Every site the tests run gets a signing key on the session's trust list, and in-process
    # code finds the list through CELLBANK_TRUST_LIST_FILE (tests/support/trust.py).
    session_trust()


@pytest.fixture(scope="session")
def infra() -> Iterator[Infrastructure]:
    """The session's infrastructure (started unless CELLBANK_* point at existing servers)."""
    reap_abandoned(REPO_ROOT / ".cellbank", "test-*")
    root = REPO_ROOT / ".cellbank" / f"test-{uuid.uuid4().hex[:8]}"
    claim(root)
    infrastructure = Infrastructure(root)
    started = time.monotonic()
    infrastructure.start()
    STARTED["infrastructure (in parallel)"] = time.monotonic() - started
    if infrastructure.provision_seconds:
        STARTED["Kafka principals provisioned"] = infrastructure.provision_seconds
    # The session's own clients (fixtures, in-process hosts, tools) act as the Kafka admin;
    # processes spawned through deploy/network.py get their own principals.
    os.environ.update(infrastructure.endpoints.kafka_env(ADMIN))
    if infrastructure.keycloak is not None:
        STARTED["Keycloak, ready"] = infrastructure.keycloak.start_seconds
    try:
        yield infrastructure
    finally:
        infrastructure.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoints(infra: Infrastructure) -> Endpoints:
    return infra.endpoints


@pytest.fixture(scope="session")
def controllable_kafka(
    infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalKafka]:
    """A broker the test may stop and restart: the session's own, or (when the session uses an
    external cluster) a private local one, so the fault tests never depend on where Kafka is."""
    if infra.kafka is not None:
        yield infra.kafka
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-private"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def database(endpoints: Endpoints) -> AsyncIterator[str]:
    """A fresh database for one test, migrated as deployed (by the owner role, with the
    runtime role's grants); its administrator URL. Dropped afterwards."""
    name = f"cellbank_t_{uuid.uuid4().hex[:12]}"
    logins = endpoints.database_logins
    await ensure_database(endpoints.database_url, name, owner=logins.roles.owner if logins else "")
    url = with_database(endpoints.database_url, name)
    pool = await create_pool(with_database(logins.owner_url, name) if logins else url, max_size=2)
    try:
        await migrate(pool, grants=(lambda c: apply_grants(c, logins.roles)) if logins else None)
    finally:
        await pool.close()
    try:
        yield url
    finally:
        await drop_database(endpoints.database_url, name)


@pytest.fixture
async def runtime_pool(endpoints: Endpoints, database: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database as the services' runtime role."""
    assert endpoints.database_logins is not None, "the session provisions the database roles"
    name = database.rsplit("/", 1)[1]
    p = await create_pool(with_database(endpoints.database_logins.runtime_url, name), max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database, max_size=20)
    try:
        yield p
    finally:
        await p.close()


async def make_topic(bootstrap: str, partitions: int = 3) -> str:
    """A fresh topic with a unique name, so tests never see each other's records."""
    name = f"test.{uuid.uuid4().hex[:12]}.events"
    await ensure_topics(bootstrap, [TopicSpec(name, -1, "test")], partitions=partitions)
    return name


@pytest.fixture
async def topic(endpoints: Endpoints) -> str:
    return await make_topic(endpoints.kafka_bootstrap)
