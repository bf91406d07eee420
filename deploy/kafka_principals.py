"""Who may do what on Kafka: every principal's ACL bindings, computed from the topic table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.topics import ANCHORS, DEADLETTER, SERVICE_TOPICS, SERVICES, TELEMETRY

ADMIN = "admin"  # the super user: creates topics, provisions the others; brokers use it too
OPERATOR = "operator"  # the CLI (watch, replay/restore, audit): read-only
DASHBOARD = "dashboard"  # the web dashboard: read-only
TANK_SENSORS = "tank-sensors"  # the telemetry gateway / tank simulator: writes readings only
COLDCHAIN = "monitor-coldchain"  # the Faust cold-chain monitor
SLA = "monitor-sla"  # the Faust shipment-promise monitor
COLDCHAIN_APP_ID = "cellbank-coldchain"
SLA_APP_ID = "cellbank-sla"
TOPIC_PREFIX = "cellbank."
EVENT_TOPICS: tuple[str, ...] = tuple(SERVICE_TOPICS.values())
# Topics a service writes besides its event topic: storage's telemetry gateway (gRPC
# RecordTemperature) publishes the readings it validated.
EXTRA_WRITES: Mapping[str, tuple[str, ...]] = {"storage": (TELEMETRY,)}


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ALLOW binding: operation on a resource (a literal name or every name with a prefix)."""

    resource: str  # TOPIC | GROUP | TRANSACTIONAL_ID | CLUSTER
    pattern: str  # LITERAL | PREFIXED
    name: str
    operation: str  # READ | WRITE | DESCRIBE | CREATE | ALL | …

    def line(self, principal: str) -> str:
        """The provisioning plan's directive (deploy/kafka/Provision.java)."""
        return f"acl {principal} {self.resource} {self.pattern} {self.name} {self.operation}"


def topic(name: str, operation: str) -> Grant:
    return Grant("TOPIC", "LITERAL", name, operation)


def group_prefix(prefix: str, operation: str = "READ") -> Grant:
    return Grant("GROUP", "PREFIXED", prefix, operation)


def service_principal(site: str, service: str) -> str:
    """lon-storage, lon-donor-intake: the relay, projections and workers of one service at one
    site. Lower case with dashes, like its OIDC client: a valid Kubernetes name (Strimzi's
    KafkaUser is named after its principal)."""
    return f"{site}-{service}".lower().replace("_", "-")


def group_prefixes(site: str, service: str) -> str:
    """The consumer groups a site service may use (shared/service_host.py names them)."""
    return f"{site}.{service}."


def service_grants(
    site: str, service: str, reads: Iterable[str], sites: Sequence[str]
) -> frozenset[Grant]:
    """Write its own topic (+ dead letters, anchors); read what its projections consume and
    the event topics WatchEvents serves; only its own consumer groups."""
    writes = (SERVICE_TOPICS[service], *EXTRA_WRITES.get(service, ()), DEADLETTER, ANCHORS)
    grants = {topic(name, "WRITE") for name in writes}
    # Anchors: its own last one is read back before it anchors again (shared/anchor_log.py).
    grants |= {topic(name, "READ") for name in (*reads, *EVENT_TOPICS, ANCHORS)}
    grants.add(group_prefix(group_prefixes(site, service)))
    if service == "delivery":
        # GetNetworkStatus reports every site's consumer lag: describe (never join) their groups.
        grants |= {group_prefix(f"{other}.", "DESCRIBE") for other in sites}
    return frozenset(grants)


def faust_grants(app_id: str, source: str) -> frozenset[Grant]:
    """A Faust app: read its source; its own internal topics and group (app-id prefixed)."""
    return frozenset(
        {
            topic(source, "READ"),
            Grant("TOPIC", "PREFIXED", app_id, "ALL"),
            group_prefix(app_id, "ALL"),
        }
    )


def read_only_grants(group: str) -> frozenset[Grant]:
    """Every cellbank topic, read and describe; groups under its own name only."""
    return frozenset(
        {
            Grant("TOPIC", "PREFIXED", TOPIC_PREFIX, "READ"),
            Grant("TOPIC", "PREFIXED", TOPIC_PREFIX, "DESCRIBE"),
            group_prefix(f"{group}."),
        }
    )


def acl_table(
    sites: Sequence[str],
    service_reads: Mapping[str, Sequence[str]],
    *,
    coldchain_app_id: str = COLDCHAIN_APP_ID,
    sla_app_id: str = SLA_APP_ID,
) -> dict[str, frozenset[Grant]]:
    """principal → its bindings (the admin is a super user and needs none)."""
    table = {
        service_principal(site, service): service_grants(
            site, service, service_reads.get(service, ()), sites
        )
        for site in sites
        for service in SERVICES
    }
    table[COLDCHAIN] = faust_grants(coldchain_app_id, TELEMETRY)
    table[SLA] = faust_grants(sla_app_id, SERVICE_TOPICS["delivery"])
    table[TANK_SENSORS] = frozenset({topic(TELEMETRY, "WRITE")})
    # `cellbank replay` names its groups replay.<site>.<service>.… (shared/replay.py).
    table[OPERATOR] = read_only_grants(OPERATOR) | {group_prefix("replay.")}
    table[DASHBOARD] = read_only_grants(DASHBOARD)
    return table


def principals(sites: Sequence[str]) -> list[str]:
    """Every principal of the network, the admin first."""
    services = [service_principal(site, service) for site in sites for service in SERVICES]
    return [ADMIN, *services, COLDCHAIN, SLA, TANK_SENSORS, OPERATOR, DASHBOARD]


def plan_lines(passwords: Mapping[str, str], table: Mapping[str, Iterable[Grant]]) -> list[str]:
    """The provisioning plan: each principal's SCRAM credentials, then every binding."""
    lines = [f"user {name} {password}" for name, password in passwords.items()]
    for principal in sorted(table):
        lines += [grant.line(principal) for grant in sorted(table[principal])]
    return lines


def writable_topics(grants: Iterable[Grant]) -> set[str]:
    """The literal topics the bindings allow writing (prefixed WRITE/ALL returned as 'prefix*')."""
    names = set()
    for g in grants:
        if g.resource == "TOPIC" and g.operation in ("WRITE", "ALL"):
            names.add(g.name if g.pattern == "LITERAL" else f"{g.name}*")
    return names


def service_reads() -> dict[str, tuple[str, ...]]:
    """What each service's projections (and policies) consume, from the services' own specs."""
    from deploy.replay import specs

    return {
        spec.name: tuple(sorted({t for topics in spec.subscriptions().values() for t in topics}))
        for spec in specs().values()
    }


def strimzi_acls(grants: Iterable[Grant]) -> list[dict[str, object]]:
    """The bindings as a Strimzi KafkaUser's spec.authorization.acls (deploy/k8s/kafka)."""
    kinds = {"TOPIC": "topic", "GROUP": "group", "TRANSACTIONAL_ID": "transactionalId"}
    rules: dict[tuple[str, str, str], list[str]] = {}
    for g in sorted(grants):
        key = (kinds[g.resource], g.name, "literal" if g.pattern == "LITERAL" else "prefix")
        rules.setdefault(key, []).append(g.operation.title().replace("_", ""))
    return [
        {"resource": {"type": kind, "name": name, "patternType": pattern}, "operations": ops}
        for (kind, name, pattern), ops in rules.items()
    ]


def password_variable(principal: str) -> str:
    """The environment variable a deployment keeps a principal's password in."""
    return f"{principal.upper().replace('-', '_')}_KAFKA_PASSWORD"


def cli_script(table: Mapping[str, Iterable[Grant]], kafka_bin: str, connect: str) -> list[str]:
    """The table as kafka-configs/kafka-acls commands (docker-compose.yml's kafka-init, where
    the broker image has no JDK for Provision.java): each principal's SCRAM credential from its
    password variable, then one kafka-acls call per principal, resource kind and operations."""
    flags = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id"}
    lines = []
    for principal in sorted(table):
        secret = f"SCRAM-SHA-512=[iterations=8192,password=$${password_variable(principal)}]"
        lines.append(
            f'{kafka_bin}/kafka-configs.sh {connect} --alter --add-config "{secret}" '
            f"--entity-type users --entity-name {principal}"
        )
    for principal in sorted(table):
        operations: dict[tuple[str, str, str], set[str]] = {}
        for g in table[principal]:
            operations.setdefault((g.resource, g.pattern, g.name), set()).add(g.operation)
        calls: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
        for (resource, pattern, name), ops in sorted(operations.items()):
            calls.setdefault((resource, pattern, tuple(sorted(ops))), []).append(name)
        for (resource, pattern, allowed), names in calls.items():
            parts = [
                f"{kafka_bin}/kafka-acls.sh {connect} --add --allow-principal User:{principal}",
                *(f"--operation {op.title().replace('_', '')}" for op in allowed),
                *(f"{flags[resource]} {name}" for name in names),
            ]
            if pattern == "PREFIXED":
                parts.append("--resource-pattern-type prefixed")
            lines.append(" ".join(parts))
    return lines
