"""The Kafka ACL table: each principal writes only what it owns, reads what it consumes."""

from __future__ import annotations

import pytest

from deploy.kafka_principals import (
    ADMIN,
    ANCHORS,
    COLDCHAIN,
    DASHBOARD,
    OPERATOR,
    SLA,
    TANK_SENSORS,
    Grant,
    acl_table,
    plan_lines,
    principals,
    service_principal,
    service_reads,
    writable_topics,
)
from shared.topics import DEADLETTER, SERVICE_TOPICS, SERVICES, TELEMETRY

SITES = ("LON", "MAN", "EDI")


@pytest.fixture(scope="module")
def reads() -> dict[str, tuple[str, ...]]:
    return service_reads()


@pytest.fixture(scope="module")
def table(reads: dict[str, tuple[str, ...]]) -> dict[str, frozenset[Grant]]:
    return acl_table(SITES, reads)


def test_every_principal_but_the_admin_has_bindings(table: dict[str, frozenset[Grant]]) -> None:
    assert set(table) == set(principals(SITES)) - {ADMIN}
    assert all(table.values())


def test_a_site_service_writes_only_its_own_topic_dead_letters_and_anchors(
    table: dict[str, frozenset[Grant]],
) -> None:
    for site in SITES:
        for service in SERVICES:
            extra = {TELEMETRY} if service == "storage" else set()
            assert writable_topics(table[service_principal(site, service)]) == {
                SERVICE_TOPICS[service], DEADLETTER, ANCHORS, *extra
            }  # fmt: skip


def test_no_principal_can_write_an_event_topic_it_does_not_own(
    table: dict[str, frozenset[Grant]],
) -> None:
    owners = {topic: service for service, topic in SERVICE_TOPICS.items()}
    for principal, grants in table.items():
        for name in writable_topics(grants):
            assert not name.endswith("*") or not any(t.startswith(name[:-1]) for t in owners)
            if name in owners:
                owner = owners[name].replace("_", "-")
                assert principal.endswith(f"-{owner}"), (principal, name)


def test_read_only_principals_cannot_write_or_create(table: dict[str, frozenset[Grant]]) -> None:
    for principal in (OPERATOR, DASHBOARD):
        assert {g.operation for g in table[principal]} <= {"READ", "DESCRIBE"}
        assert writable_topics(table[principal]) == set()


def test_the_tank_sensors_write_telemetry_only(table: dict[str, frozenset[Grant]]) -> None:
    assert table[TANK_SENSORS] == {Grant("TOPIC", "LITERAL", TELEMETRY, "WRITE")}


def test_a_service_reads_what_its_projections_consume(
    table: dict[str, frozenset[Grant]], reads: dict[str, tuple[str, ...]]
) -> None:
    assert reads["manufacturing"] and reads["delivery"]
    for service, topics in reads.items():
        readable = {
            g.name
            for g in table[service_principal("LON", service)]
            if g.resource == "TOPIC" and g.operation == "READ"
        }
        assert set(topics) <= readable


def test_consumer_groups_carry_the_principals_own_prefix(
    table: dict[str, frozenset[Grant]],
) -> None:
    for site in SITES:
        for service in SERVICES:
            joinable = {
                g.name
                for g in table[service_principal(site, service)]
                if g.resource == "GROUP" and g.operation != "DESCRIBE"
            }
            assert joinable == {f"{site}.{service}."}
    assert {g.name for g in table[COLDCHAIN] if g.resource == "GROUP"} == {"cellbank-coldchain"}
    assert {g.name for g in table[SLA] if g.resource == "GROUP"} == {"cellbank-sla"}


def test_the_plan_names_each_password_once_and_every_binding(
    table: dict[str, frozenset[Grant]],
) -> None:
    lines = plan_lines({"lon-storage": "secret"}, table)
    assert lines[0] == "user lon-storage secret"
    assert sum(1 for line in lines if line.startswith("acl ")) == sum(map(len, table.values()))
    assert "acl lon-storage TOPIC LITERAL cellbank.storage.events.v1 WRITE" in lines
