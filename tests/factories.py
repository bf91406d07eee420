"""Builders of test events with unique ids."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from shared.chain_key import ChainKey
from shared.events import NewEvent
from shared.eventstore import AggregateAppend, AppendResult, InMemoryEventStore

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


class InterleavedEventStore(InMemoryEventStore):
    """An in-memory store where another writer's event, once set, lands just before the next
    append (as another process's would between a command's load and its append)."""

    def __init__(self, site_id: str = "LON") -> None:
        super().__init__(site_id, chain_key=ChainKey.generate())
        self.before_next_append: tuple[str, NewEvent] | None = None

    async def append_all(self, appends: Sequence[AggregateAppend]) -> tuple[AppendResult, ...]:
        if self.before_next_append is not None:
            (aggregate_id, event), self.before_next_append = self.before_next_append, None
            await super().append_all(
                [AggregateAppend(aggregate_id, len(await self.load(aggregate_id)), [event])]
            )
        return await super().append_all(appends)
