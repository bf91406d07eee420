"""Timestamps decode as protobuf's own Timestamp.ToDatetime does, and a bad one is poison
(ValueError: dead-lettered by the projection runner), never a crash."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC

import pytest
from cellbank.common.v1 import envelope_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from shared.envelope_codec import decode, encode
from shared.proto_mapping import timestamp_to_datetime
from tests.site_log import site_log


@given(
    seconds=st.integers(min_value=-62_135_596_800, max_value=253_402_300_799),
    nanos=st.integers(min_value=0, max_value=999_999_999),
)
def test_a_valid_timestamp_gives_what_protobuf_gives(seconds: int, nanos: int) -> None:
    ts = Timestamp(seconds=seconds, nanos=nanos)
    assert timestamp_to_datetime(ts) == ts.ToDatetime(tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(10**12, 0), (-62_135_596_801, 0), (253_402_300_800, 0), (0, -5), (0, 1_000_000_000)],
)
def test_an_out_of_range_timestamp_is_a_value_error(seconds: int, nanos: int) -> None:
    with pytest.raises(ValueError, match="timestamp out of range"):
        timestamp_to_datetime(Timestamp(seconds=seconds, nanos=nanos))


def test_an_envelope_with_an_impossible_time_is_refused_as_not_an_event() -> None:
    (_, event), *_ = site_log(1)
    envelope = envelope_pb2.EventEnvelope.FromString(encode(event))
    envelope.occurred_at.seconds = 10**12
    with pytest.raises(ValueError):
        decode(envelope.SerializeToString())
    assert decode(encode(replace(event))) == event  # a good one still round-trips
