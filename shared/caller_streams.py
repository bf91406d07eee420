"""A cap on the server-streaming calls one caller holds open at once (WatchOrder, WatchEvents)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from shared.bounds import STREAMS_PER_CALLER
from shared.errors import ResourceExhausted


class CallerStreams:
    """Open streams per caller (`str(principal)`) of one servicer; one server, one count."""

    def __init__(self, per_caller: int = STREAMS_PER_CALLER) -> None:
        self.per_caller = per_caller
        self._open: Counter[str] = Counter()

    @contextlib.contextmanager
    def slot(self, caller: str, what: str) -> Iterator[None]:
        """Hold one of the caller's streams for the block; ResourceExhausted, naming the limit,
        when all are taken. Released however the stream ends (done, cancelled, failed)."""
        if self._open[caller] >= self.per_caller:
            raise ResourceExhausted(
                f"{caller} already has {self._open[caller]} {what} streams open"
                f" (at most {self.per_caller} per caller); close one first"
            )
        self._open[caller] += 1
        try:
            yield
        finally:
            self._open[caller] -= 1
            if not self._open[caller]:
                del self._open[caller]
