"""The Kafka topics of ARCHITECTURE.md, as data: names, keys' meaning, retention."""

from __future__ import annotations

from dataclasses import dataclass

FOREVER = -1
SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    retention_ms: int
    description: str

    def config(self, replication_factor: int) -> dict[str, str]:
        """Topic-level configs; min.insync.replicas follows the replication factor (2 of 3)."""
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_ms),
            "retention.bytes": "-1",
            "min.insync.replicas": str(min(2, replication_factor)),
        }


DONOR_EVENTS = "cellbank.donor.events.v1"
MANUFACTURING_EVENTS = "cellbank.manufacturing.events.v1"
STORAGE_EVENTS = "cellbank.storage.events.v1"
MATCHING_EVENTS = "cellbank.matching.events.v1"
DELIVERY_EVENTS = "cellbank.delivery.events.v1"
TELEMETRY = "cellbank.telemetry.v1"
DEADLETTER = "cellbank.deadletter.v1"
ANCHORS = "cellbank.anchors.v1"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(DONOR_EVENTS, FOREVER, "donor intake events, key donor/collection id"),
    TopicSpec(MANUFACTURING_EVENTS, FOREVER, "batches, QC, release, units, key batch/unit id"),
    TopicSpec(STORAGE_EVENTS, FOREVER, "storage, reservations, quarantine, key unit/tank id"),
    TopicSpec(MATCHING_EVENTS, FOREVER, "orders, matches, allocations, key order id"),
    TopicSpec(DELIVERY_EVENTS, FOREVER, "shipments, custody, receipt, infusion, key shipment id"),
    TopicSpec(TELEMETRY, SEVEN_DAYS_MS, "temperature readings, key tank/shipper id (bounded)"),
    TopicSpec(DEADLETTER, FOREVER, "poison records with the error, key original key"),
    TopicSpec(ANCHORS, FOREVER, "signed audit-chain heads of every store, key <site>.<service>"),
)

# The topic each service's outbox relay publishes its event store to.
SERVICE_TOPICS: dict[str, str] = {
    "donor_intake": DONOR_EVENTS,
    "manufacturing": MANUFACTURING_EVENTS,
    "storage": STORAGE_EVENTS,
    "matching": MATCHING_EVENTS,
    "delivery": DELIVERY_EVENTS,
}
SERVICES: tuple[str, ...] = tuple(SERVICE_TOPICS)
