"""Builders of test events with unique ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from shared.events import NewEvent

T0 = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def new_event(
    n: int = 0, *, event_type: str = "cellbank.test.v1.Thing", payload: bytes | None = None
) -> NewEvent:
    return NewEvent(
        event_type=event_type,
        aggregate_type="thing",
        payload=payload if payload is not None else f"payload-{n}".encode(),
        occurred_at=T0,
        actor="operator:alice",
        reason="test",
        correlation_id="corr-1",
    )


def aggregate_id(prefix: str = "agg") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
