"""Prometheus metrics of the platform plumbing, and the /metrics endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_APPENDED = Counter(
    "cellbank_events_appended_total", "Events appended to the event store", ["site", "service"]
)
APPEND_CONFLICTS = Counter(
    "cellbank_append_conflicts_total",
    "Appends refused for a stale expected version",
    ["site", "service"],
)
RELAY_PUBLISHED = Counter(
    "cellbank_relay_published_total", "Events the outbox relay published to Kafka", ["relay"]
)
RELAY_POSITION = Gauge("cellbank_relay_position", "Last store position published", ["relay"])
RELAY_ERRORS = Counter("cellbank_relay_errors_total", "Relay publish failures (retried)", ["relay"])
RELAY_PARKED = Counter(
    "cellbank_relay_parked_total",
    "Records the relay can never publish (e.g. too large for the topic), parked for an operator",
    ["relay"],
)
ANCHORS = Counter(
    "cellbank_anchors_total",
    "Chain heads anchored (published, signed) or refused (the head does not extend the last"
    " anchor: the store lost or changed anchored events)",
    ["site", "service", "outcome"],
)
PROJECTION_APPLIED = Counter(
    "cellbank_projection_applied_total", "Events applied to a projection", ["projection"]
)
PROJECTION_DUPLICATES = Counter(
    "cellbank_projection_duplicates_total", "Redelivered events skipped by event id", ["projection"]
)
PROJECTION_PARKED = Counter(
    "cellbank_projection_parked_total", "Records parked behind a poison record", ["projection"]
)
DEADLETTERED = Counter(
    "cellbank_deadlettered_total", "Poison records sent to the dead-letter topic", ["projection"]
)
UNTRUSTED_RECORDS = Counter(
    "cellbank_untrusted_records_total",
    "Records refused because their signature did not verify (dead-lettered, never applied)",
    ["consumer", "reason"],
)
PROJECTION_LAG = Gauge(
    "cellbank_projection_consumer_lag",
    "Records of a partition the projection has still to read (at its last batch)",
    ["projection", "topic", "partition"],
)
GRPC_REQUESTS = Counter(
    "cellbank_grpc_requests_total", "gRPC calls by method and status code", ["method", "code"]
)
GRPC_LATENCY = Histogram("cellbank_grpc_latency_seconds", "gRPC call latency", ["method"])
TELEMETRY_SKIPPED = Counter(
    "cellbank_telemetry_skipped_total",
    "Telemetry records a monitor could not decode, skipped (the monitor keeps going)",
    ["monitor"],
)


def serve_metrics(port: int, addr: str = "127.0.0.1") -> int:
    """Start the /metrics HTTP endpoint; returns the bound port (0 picks a free one)."""
    server, _thread = start_http_server(port, addr=addr)
    return int(server.server_port)
