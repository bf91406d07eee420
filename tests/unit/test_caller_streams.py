"""Per-caller stream cap: the fifth open stream of one caller is refused, naming the limit."""

from __future__ import annotations

import contextlib

import pytest

from shared.caller_streams import CallerStreams
from shared.errors import ResourceExhausted


def test_a_caller_beyond_its_streams_is_refused_naming_the_limit_and_others_are_not():
    streams = CallerStreams(per_caller=4)
    with contextlib.ExitStack() as held:
        for _ in range(4):
            held.enter_context(streams.slot("hospital:H1", "WatchOrder"))
        with pytest.raises(ResourceExhausted) as refused:
            held.enter_context(streams.slot("hospital:H1", "WatchOrder"))
        assert "at most 4 per caller" in str(refused.value)
        assert "hospital:H1 already has 4 WatchOrder streams open" in str(refused.value)
        with streams.slot("hospital:H2", "WatchOrder"):
            pass  # another caller is not affected


def test_a_stream_that_ends_in_any_way_gives_its_slot_back():
    streams = CallerStreams(per_caller=1)
    with pytest.raises(RuntimeError), streams.slot("operator:alice", "WatchEvents"):
        raise RuntimeError("the stream failed")
    with streams.slot("operator:alice", "WatchEvents"):
        pass
    assert not streams._open
