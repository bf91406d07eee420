"""Searching the network inventory: the in-memory index kept fresh from its feed, with the
classification table in use (which a newly approved HLA reference release replaces)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from services.matching.domain.ranking import Classification, Criteria
from services.matching.index import CandidateIndex, SearchResult
from services.matching.ports import IndexSource
from shared.eventstore import Clock

log = logging.getLogger(__name__)


class CandidateSearch:
    def __init__(
        self,
        index: CandidateIndex,
        feed: IndexSource,
        clock: Clock,
        *,
        max_age: float = 0.25,  # seconds a search may use the index without refreshing it
    ) -> None:
        self.index = index
        self.feed = feed
        self.clock = clock
        self.max_age = max_age
        self._refresh_lock = asyncio.Lock()

    @property
    def table(self) -> Classification:
        """The classification table units are ranked with now."""
        return self.index.table

    def use_table(self, table: Classification) -> None:
        """Rank with another table from now on (a newly approved HLA reference release)."""
        self.index.use_table(table)

    async def fresh(self, max_age: float | None = None) -> None:
        """Refresh the index unless it is younger than `max_age` seconds (0: always)."""
        limit = self.max_age if max_age is None else max_age
        if time.monotonic() - self.feed.refreshed_at <= limit:
            return
        async with self._refresh_lock:
            if time.monotonic() - self.feed.refreshed_at <= limit:
                return
            await self.feed.refresh()

    async def search(self, criteria: Criteria, limit: int) -> SearchResult:
        await self.fresh()
        return self.index.search(criteria, now=self.clock(), limit=limit)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the index fresh between searches (a search refreshes a stale one)."""
        while not stop.is_set():
            try:
                await self.fresh()
            except Exception as exc:  # the database is down: searches will say so
                log.warning("index refresh failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.max_age)
