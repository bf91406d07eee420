"""The cyclic garbage collector, paused around a burst of allocation-heavy work.

Reference counting still frees everything that is not a cycle. Decoding and folding records
allocate objects the collector tracks (events, states, rows), and its collections walk every
tracked object the process holds: at a million events they took a third of an as-of fold, and
about a quarter of a replay worker's verifying (issue 17's profiles). Counted: the collector
resumes when the last pause ends, and only if it was running when the first began. Hold it
only around synchronous work (on the event loop, or in a worker thread), never across an
await, so the rest of the process is never long without it. Used by bounded bursts (an as-of
fold, a bulk replay's batch), not by live consumers: their polls follow one another, and
overlapping pauses of many of them would leave the collector hardly ever running.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_pauses = 0
_resume = False
_pauses_lock = threading.Lock()


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    global _pauses, _resume
    with _pauses_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
