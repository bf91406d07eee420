"""The dashboard's live events: one shared Kafka reader fanned out to capped SSE clients,
redacted by shared/redaction.py (the rule is written there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

from shared.event_watch import EventFilter, Watched
from shared.redaction import redact_watched

log = logging.getLogger(__name__)


def redacted(watched: Watched, roles: frozenset[str]) -> dict[str, Any]:
    """The SSE record of an event for a user with `roles`, personal fields replaced (the rule:
    shared/redaction.py); the one-line summary is rebuilt from what is shown."""
    shown = redact_watched(watched, roles)
    record = shown.record()
    record["summary"] = shown.summary
    return record


class TooManyStreams(Exception):
    """The dashboard already serves as many live streams as it may (total or for this user)."""


class Subscriber:
    """One SSE client's bounded queue: when it is full the event is dropped and counted, so a
    client that stops reading never holds up the shared reader or anyone else."""

    def __init__(self, who: str, selection: EventFilter, size: int) -> None:
        self.who = who
        self.selection = selection
        self.queue: asyncio.Queue[Watched] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, watched: Watched) -> None:
        topic = self.selection.topic
        if (topic and watched.topic != topic) or not self.selection.matches(watched.event):
            return
        try:
            self.queue.put_nowait(watched)
        except asyncio.QueueFull:
            self.dropped += 1

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped


Source = Callable[[], AsyncGenerator[Watched, None]]


class EventHub:
    """One Kafka reader for the whole dashboard, started with the first stream and kept until
    `stop`; every event goes to each subscriber's queue without waiting on any of them."""

    def __init__(
        self,
        source: Source,
        *,
        max_streams: int = 20,
        max_streams_per_user: int = 5,
        queue_size: int = 256,
        backlog: int = 50,
        retry_s: float = 2.0,
        on_event: Callable[[Watched], None] | None = None,
    ) -> None:
        self._source = source
        self._on_event = on_event  # sees every event the reader reads (the charts count them)
        self.max_streams = max_streams
        self.max_streams_per_user = max_streams_per_user
        self.queue_size = queue_size
        self.retry_s = retry_s
        self._subscribers: set[Subscriber] = set()
        self._backlog: deque[Watched] = deque(maxlen=backlog)
        self._task: asyncio.Task[None] | None = None
        self.readers_opened = 0  # Kafka consumers this hub has created (one, unless it failed)

    @property
    def streams(self) -> int:
        return len(self._subscribers)

    @contextlib.contextmanager
    def subscribe(self, who: str, selection: EventFilter) -> Iterator[Subscriber]:
        """A subscriber for the duration of the block, seeded with recent events;
        TooManyStreams beyond the caps."""
        self.check(who)
        subscriber = Subscriber(who, selection, self.queue_size)
        for watched in self._backlog:
            subscriber.offer(watched)
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-event-hub")
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)

    def check(self, who: str) -> None:
        """TooManyStreams if one more stream for `who` would pass a cap (nothing is claimed)."""
        if len(self._subscribers) >= self.max_streams:
            raise TooManyStreams(
                f"the dashboard serves at most {self.max_streams} live event streams and all "
                "are in use: close another dashboard tab or try again shortly"
            )
        mine = sum(1 for s in self._subscribers if s.who == who)
        if mine >= self.max_streams_per_user:
            raise TooManyStreams(
                f"{who} already has {mine} live event streams open (at most "
                f"{self.max_streams_per_user} per person): close another dashboard tab"
            )

    def publish(self, watched: Watched) -> None:
        if self._on_event is not None:
            self._on_event(watched)
        self._backlog.append(watched)
        for subscriber in tuple(self._subscribers):
            subscriber.offer(watched)

    async def _run(self) -> None:
        while True:
            self.readers_opened += 1
            source = self._source()
            try:
                async with contextlib.aclosing(source):
                    async for watched in source:
                        self.publish(watched)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka away: say so and read again shortly
                log.warning("the event reader failed; retrying", extra={"error": str(exc)})
            await asyncio.sleep(self.retry_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
