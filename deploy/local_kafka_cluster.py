"""A three-node Apache Kafka 4 KRaft cluster (combined broker+controller) for the fault tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deploy.kafka_principals import ADMIN
from deploy.kafka_provision import ensure_passwords
from deploy.local_kafka import LOG4J2, LocalKafka, _cluster_id, kafka_libs, security_properties
from deploy.processes import InfraError, free_port, log_tail, run_async, wait_until
from shared.kafka_clients import KafkaSecurity, admin_client

# The production topology (ARCHITECTURE.md): every partition on 3 brokers, a write needs 2 of
# them, and a replica that fell behind is never elected (no silent loss of acknowledged writes).
# Heartbeats are tighter than the defaults (2 s / 9 s) so a SIGKILLed broker is fenced, and its
# partitions led elsewhere, within a few seconds.
CLUSTER_PROPERTIES: dict[str, str] = {
    "process.roles": "broker,controller",
    "num.partitions": "3",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "false",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "group.initial.rebalance.delay.ms": "0",
    "broker.heartbeat.interval.ms": "1000",
    "broker.session.timeout.ms": "6000",
    # Fewer request threads than the defaults (3 network, 8 I/O): three brokers share 2 cores.
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
}
PLAINTEXT = {
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
}
# Start fast on a crowded machine: C1 only (a restarted broker is back sooner; tests never
# run it long enough for C2 to pay off).
JVM_FLAGS = ("-XX:TieredStopAtLevel=1",)
NODE_IDS = (1, 2, 3)
HEAP_MB = 384  # three brokers beside PostgreSQL, Keycloak and the services on 2 cores / 24 GiB


class ClusterNode(LocalKafka):
    """One voter of the cluster: LocalKafka's process handling, the cluster's configuration."""

    def __init__(
        self, cluster: LocalKafkaCluster, node_id: int, data_dir: Path, ports: tuple[int, int]
    ) -> None:
        super().__init__(
            data_dir, port=ports[0], heap_mb=cluster.heap_mb, authenticated=cluster.authenticated
        )
        self.controller_port = ports[1]  # fixed for the cluster's life: the voters name it
        self.credentials = cluster.credentials  # one admin the brokers authenticate as
        self.cluster = cluster
        self.node_id = node_id

    def properties(self) -> dict[str, str]:
        """The node's server properties: the cluster's, the single broker's security (SASL
        SCRAM for clients and brokers, PLAIN for controllers, ACLs) when authenticated."""
        listener = "SASL_PLAINTEXT" if self.authenticated else "PLAINTEXT"
        props = dict(CLUSTER_PROPERTIES)
        props.update(
            {
                "node.id": str(self.node_id),
                "controller.quorum.voters": self.cluster.voters,
                "listeners": f"{listener}://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                "advertised.listeners": f"{listener}://127.0.0.1:{self.port}",
                "log.dirs": str(self.data_dir / "log"),
            }
        )
        if self.authenticated:
            text = security_properties(ADMIN, self.admin_security.password)
            for line in text.splitlines():
                key, is_property, value = line.partition("=")
                if is_property:
                    props[key] = value
        else:
            props.update(PLAINTEXT)
        props.update(self.cluster.extra_properties(self) if self.cluster.extra_properties else {})
        return props

    def _configure(self, libs: Path) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the password
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2.format(log_file=self.log_file))
        if not (self.data_dir / "log" / "meta.properties").exists():
            # Static quorum (controller.quorum.voters): no --standalone / --initial-controllers.
            self._format_storage(
                libs, props, (f"--cluster-id={self.cluster.cluster_id}", *self.cluster.format_args)
            )
        return props

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        java, *rest = super()._java_cmd(libs, main, *args)
        return [java, *JVM_FLAGS, *rest]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no controlled shutdown, no flush; what the page cache holds survives."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        self.proc = None

    def quorum_state(self) -> dict[str, Any]:
        """The node's persisted view of the metadata quorum (leader id and epoch)."""
        path = self.data_dir / "log" / "__cluster_metadata-0" / "quorum-state"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}


class LocalKafkaCluster:
    """Three combined broker+controller nodes from the same Maven jars, one cluster id.

    Authenticated (the default) like the single broker: SASL/SCRAM with the admin as super
    user, StandardAuthorizer; `provision(cluster)` runs once all brokers are live (principals
    and ACLs: deploy/kafka_provision.provision_network). `extra_properties(node)` overrides
    server properties, `format_args` go to the storage tool."""

    def __init__(
        self,
        data_dir: Path,
        *,
        authenticated: bool = True,
        heap_mb: int = HEAP_MB,
        extra_properties: Callable[[ClusterNode], Mapping[str, str]] | None = None,
        format_args: Sequence[str] = (),
        provision: Callable[[LocalKafkaCluster], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        # SASL/SCRAM + ACLs like the single broker (deploy/local_kafka.py), or open PLAINTEXT.
        self.authenticated = authenticated
        self.credentials = data_dir / "credentials"  # 0600 password files, the admin's first
        self.heap_mb = heap_mb
        self.extra_properties = extra_properties
        self.format_args = tuple(format_args)
        self.provision = provision
        id_file = data_dir / "cluster.id"
        self.cluster_id = id_file.read_text().strip() if id_file.exists() else _cluster_id()
        data_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(self.cluster_id)
        ports = free_ports(2 * len(NODE_IDS))
        self.nodes = {
            n: ClusterNode(self, n, data_dir / f"node-{n}", (ports[2 * i], ports[2 * i + 1]))
            for i, n in enumerate(NODE_IDS)
        }

    @property
    def admin_security(self) -> KafkaSecurity:
        """How the admin (super user) authenticates; PLAINTEXT when not authenticated."""
        return self.nodes[NODE_IDS[0]].admin_security

    @property
    def voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes.values())

    @property
    def bootstrap(self) -> str:
        """All three brokers: clients find the cluster whichever of them is down."""
        return ",".join(n.bootstrap for n in self.nodes.values())

    def live_nodes(self) -> list[int]:
        return [n.node_id for n in self.nodes.values() if n.alive]

    def start(self, timeout: float = 120.0) -> None:
        """Start every node (in parallel: a voter waits for a quorum) and return once the
        metadata lists all three brokers; then run the provisioning callback."""
        kafka_libs()  # fetched once, before three threads would race for it
        if self.authenticated:  # the admin's password file, made once before the nodes race
            ensure_passwords(self.credentials, [ADMIN])
        print(f"[cellbank] starting a 3-node Kafka cluster on {self.bootstrap}", flush=True)
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            futures = [pool.submit(n.start, timeout) for n in self.nodes.values() if not n.alive]
            errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            self.stop()
            raise InfraError("\n".join(str(e) for e in errors))
        try:
            self.wait_for_brokers(NODE_IDS, timeout=timeout)
        except InfraError:
            self.stop()
            raise
        if self.provision is not None:
            self.provision(self)

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown of every node still running (in parallel; SIGKILL after timeout)."""
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.stop(timeout), self.nodes.values()))

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (broker and controller at once)."""
        print(f"[cellbank] SIGKILL Kafka node {node_id}", flush=True)
        self.nodes[node_id].kill()

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        """Restart one node and return once the cluster's metadata lists it again."""
        self.start_nodes([node_id], timeout=timeout)

    def start_nodes(self, node_ids: Iterable[int], *, timeout: float = 90.0) -> None:
        """Restart nodes in parallel (two of three voters down: neither is ready without the
        other) and return once the cluster's metadata lists them again."""
        ids = list(node_ids)
        with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
            list(pool.map(lambda n: self.nodes[n].start(timeout), ids))
        self.wait_for_brokers(ids, timeout=timeout)

    def wait_for_brokers(self, node_ids: Iterable[int], *, timeout: float) -> None:
        wanted = set(node_ids)
        try:
            wait_until(
                lambda: wanted <= run_async(lambda: self.registered_brokers()),
                timeout=timeout,
                what=f"Kafka brokers {sorted(wanted)} in the cluster's metadata",
            )
        except InfraError as exc:
            raise InfraError(f"{exc}\n{self._log_tails()}") from None

    async def registered_brokers(self) -> set[int]:
        """The broker ids the cluster's metadata lists as live (empty when unreachable)."""
        from aiokafka.errors import KafkaError

        admin = admin_client(self.bootstrap, security=self.admin_security, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(admin.start(), 5)
            cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
            return {int(b["node_id"]) for b in cluster.get("brokers", ())}
        except (KafkaError, OSError, TimeoutError):
            return set()
        finally:
            await admin.close()

    def controller_leader(self) -> int | None:
        """The node that is the active controller (the metadata quorum's leader), as the live
        voters persisted it (quorum-state: leader id per epoch); None while there is none.
        The broker jars hold no kafka-metadata-quorum tool and DescribeCluster's controller
        id is a random broker in KRaft, so the voters' own record is the reliable source."""
        states = [self.nodes[n].quorum_state() for n in self.live_nodes()]
        epochs = [(s.get("leaderEpoch", -1), s.get("leaderId", -1)) for s in states if s]
        if not epochs:
            return None
        epoch, leader = max(epochs)
        agreeing = sum(1 for e, lead in epochs if (e, lead) == (epoch, leader))
        if leader in self.live_nodes() and agreeing * 2 > len(self.nodes):
            return int(leader)
        return None

    async def under_replicated(self, required: Iterable[str] = ()) -> list[str]:
        """Partitions of every topic (internal ones included) whose in-sync replicas are fewer
        than their replicas or that have no leader, '<topic>[<p>] leader=… isr=…/…', and the
        required topics the metadata lacks. A broker that has not yet seen a fault may still
        answer with the replicas it knew: callers wait for full replication after a node
        returns, not for under-replication after a kill."""
        from aiokafka.errors import KafkaError

        admin = admin_client(self.bootstrap, security=self.admin_security, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 10)
            described = await asyncio.wait_for(admin.describe_topics(), 10)
        except (KafkaError, OSError, TimeoutError) as exc:
            return [f"metadata unavailable: {exc!r}"]
        finally:
            await admin.close()
        lagging = []
        present = {t["topic"] for t in described if t["error_code"] == 0}
        lagging += [f"{t}: not in the metadata" for t in sorted(set(required) - present)]
        for topic in described:
            for p in topic["partitions"]:
                if p["leader"] < 0 or len(p["isr"]) < len(p["replicas"]):
                    lagging.append(
                        f"{topic['topic']}[{p['partition']}] leader={p['leader']} "
                        f"isr={sorted(p['isr'])}/{sorted(p['replicas'])}"
                    )
        return lagging

    def _log_tails(self) -> str:
        return "\n".join(
            f"--- node {n.node_id} log ---\n{log_tail(n.log_file, 10)}" for n in self.nodes.values()
        )


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (free_port alone may hand out the same one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
