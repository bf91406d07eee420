"""A Timestamp outside what a datetime holds is bad input naming the field, not INTERNAL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from shared.errors import InvalidArgument
from shared.grpc_requests import moment_of


@pytest.mark.parametrize("seconds", [-(10**12), 10**12, 253402300800])
def test_a_moment_beyond_the_years_1_to_9999_is_invalid_argument(seconds):
    with pytest.raises(InvalidArgument) as refused:
        moment_of(Timestamp(seconds=seconds), "occurred_at")
    assert refused.value.field == "occurred_at"


def test_a_moment_in_range_is_a_utc_datetime():
    assert moment_of(Timestamp(seconds=0), "at") == datetime(1970, 1, 1, tzinfo=UTC)
