"""The project's own infrastructure: a real broker and server, explicit topics, databases."""

from __future__ import annotations

import asyncio

import asyncpg
import psutil
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from deploy.infra import Endpoints, Infrastructure, ensure_site_databases
from deploy.keycloak import Identity
from shared import kafka_clients
from shared.db import drop_database, with_database
from shared.topics import TOPICS


def test_session_runs_a_real_kafka_broker_and_postgres(infra: Infrastructure):
    if infra.kafka is not None:
        assert infra.kafka.proc is not None
        cmdline = " ".join(psutil.Process(infra.kafka.proc.pid).cmdline())
        assert "kafka.Kafka" in cmdline and "java" in cmdline
    if infra.postgres is not None:
        assert infra.postgres.proc is not None
        assert psutil.Process(infra.postgres.proc.pid).name() == "postgres"


async def test_every_topic_exists_with_its_retention(endpoints: Endpoints):
    admin = kafka_clients.admin_client(endpoints.kafka_bootstrap)
    await admin.start()
    try:
        assert {t.name for t in TOPICS} <= set(await admin.list_topics())
        resources = [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in TOPICS]
        responses = await admin.describe_configs(resources)
        configs = {
            name: {entry[0]: entry[1] for entry in entries}
            for response in responses
            for _code, _msg, _type, name, entries in response.resources
        }
    finally:
        await admin.close()
    for spec in TOPICS:
        assert configs[spec.name]["retention.ms"] == str(spec.retention_ms), spec.name
        assert configs[spec.name]["cleanup.policy"] == "delete"


async def test_topics_are_never_auto_created(endpoints: Endpoints):
    producer = kafka_clients.producer(endpoints.kafka_bootstrap, request_timeout_ms=3000)
    await producer.start()
    try:
        with pytest.raises((KafkaError, asyncio.TimeoutError)):
            await asyncio.wait_for(producer.send_and_wait("cellbank.nonexistent.v1", b"x"), 5)
    finally:
        await producer.stop()


async def test_one_database_per_site_and_service(endpoints: Endpoints):
    names = await ensure_site_databases(
        endpoints.database_url, sites=("ZZA",), services=("storage", "matching")
    )
    try:
        assert names == ["cellbank_zza_storage", "cellbank_zza_matching"]
        await ensure_site_databases(
            endpoints.database_url, sites=("ZZA",), services=("storage",)
        )  # idempotent
        for name in names:
            conn = await asyncpg.connect(with_database(endpoints.database_url, name))
            assert await conn.fetchval("SELECT current_database()") == name
            await conn.close()
    finally:
        for name in names:
            await drop_database(endpoints.database_url, name)


def test_existing_servers_from_environment_start_nothing(tmp_path):
    env = {
        "CELLBANK_KAFKA_BOOTSTRAP": "kafka.example:9092",
        "CELLBANK_DATABASE_URL": "postgresql://u@db.example/postgres",
        "CELLBANK_OIDC_ISSUER": "https://id.example/realms/cellbank/",
    }
    infra = Infrastructure(tmp_path, env=env)
    assert infra.kafka is None and infra.postgres is None and infra.keycloak is None
    assert infra.endpoints == Endpoints(
        "kafka.example:9092", "postgresql://u@db.example/postgres",
        Identity("https://id.example/realms/cellbank"), kafka_local=False,
    )  # fmt: skip


def test_storage_formats_when_the_random_cluster_id_starts_with_a_dash(tmp_path, monkeypatch):
    import deploy.local_kafka as local_kafka

    monkeypatch.setattr(local_kafka, "_cluster_id", lambda: "-" + "A" * 21)  # 1 in 64 ids does
    broker = local_kafka.LocalKafka(tmp_path / "kafka")
    broker._configure(local_kafka.kafka_libs())
    assert (tmp_path / "kafka" / "log" / "meta.properties").exists()
