"""The three-node cluster's configuration and its reading of the controller quorum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.local_kafka_cluster import ClusterNode, LocalKafkaCluster


def test_every_node_is_a_voter_of_one_quorum_with_the_production_topology(tmp_path: Path):
    cluster = LocalKafkaCluster(tmp_path)
    props = [node.properties() for node in cluster.nodes.values()]
    assert sorted(p["node.id"] for p in props) == ["1", "2", "3"]
    assert {p["controller.quorum.voters"] for p in props} == {cluster.voters}
    assert len(cluster.voters.split(",")) == 3
    for p in props:
        assert p["process.roles"] == "broker,controller"
        assert p["default.replication.factor"] == "3"
        assert p["min.insync.replicas"] == "2"
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
        assert p["unclean.leader.election.enable"] == "false"
    ports = [n.port for n in cluster.nodes.values()] + [
        n.controller_port for n in cluster.nodes.values()
    ]
    assert len(set(ports)) == 6
    assert cluster.bootstrap.count(",") == 2
    # A restarted cluster object keeps the id the storage was formatted with.
    assert LocalKafkaCluster(tmp_path).cluster_id == cluster.cluster_id


def test_extra_properties_override_the_defaults_per_node(tmp_path: Path):
    cluster = LocalKafkaCluster(
        tmp_path,
        extra_properties=lambda node: {
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "broker.rack": f"rack-{node.node_id}",
        },
    )
    props = cluster.nodes[2].properties()
    assert props["listener.security.protocol.map"].startswith("SASL_PLAINTEXT")
    assert props["broker.rack"] == "rack-2"


def _quorum_state(node: ClusterNode, leader: int, epoch: int) -> None:
    folder = node.data_dir / "log" / "__cluster_metadata-0"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quorum-state").write_text(json.dumps({"leaderId": leader, "leaderEpoch": epoch}))


@pytest.mark.parametrize(
    ("live", "states", "expected"),
    [
        ({1, 2, 3}, {1: (1, 1), 2: (1, 1), 3: (1, 1)}, 1),
        # Node 1 was killed: the survivors elected 2 in a later epoch.
        ({2, 3}, {1: (1, 1), 2: (2, 2), 3: (2, 2)}, 2),
        # A survivor that has not yet heard of the new epoch does not outvote the majority.
        ({1, 2, 3}, {1: (3, 3), 2: (3, 3), 3: (1, 2)}, 3),
        # The leader the files name is dead and no new one yet: none.
        ({2, 3}, {1: (1, 1), 2: (1, 1), 3: (1, 1)}, None),
        # One voter alone is no quorum.
        ({3}, {1: (1, 1), 2: (1, 1), 3: (3, 5)}, None),
    ],
)
def test_the_active_controller_is_the_live_majority_s_leader_of_the_latest_epoch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    live: set[int],
    states: dict[int, tuple[int, int]],
    expected: int | None,
):
    cluster = LocalKafkaCluster(tmp_path)
    monkeypatch.setattr(ClusterNode, "alive", property(lambda node: node.node_id in live))
    for node_id, (leader, epoch) in states.items():
        _quorum_state(cluster.nodes[node_id], leader, epoch)
    assert cluster.controller_leader() == expected


def test_the_cluster_authenticates_like_the_single_broker_unless_told_not_to(tmp_path: Path):
    secured = LocalKafkaCluster(tmp_path / "secured").nodes[1].properties()
    assert secured["listeners"].startswith("SASL_PLAINTEXT://")
    assert secured["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert secured["authorizer.class.name"].endswith("StandardAuthorizer")
    assert secured["allow.everyone.if.no.acl.found"] == "false"
    open_ = LocalKafkaCluster(tmp_path / "open", authenticated=False).nodes[1].properties()
    assert open_["listeners"].startswith("PLAINTEXT://")
    assert "authorizer.class.name" not in open_
