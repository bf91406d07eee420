"""Matching's metrics: orders by outcome, time to allocate, reservations asked of owners."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ORDERS = Counter("cellbank_orders_total", "Orders by outcome", ["outcome"])
ALLOCATION_SECONDS = Histogram(
    "cellbank_allocation_seconds", "Order placed → allocated or rejected",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
RESERVATION_ATTEMPTS = Counter(
    "cellbank_reservation_attempts_total", "Reservations asked of owning sites", ["result"]
)
