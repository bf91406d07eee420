"""Each domain error maps to exactly the gRPC status ARCHITECTURE.md names."""

from __future__ import annotations

import grpc
import pytest

from shared.errors import (
    ConcurrencyConflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ResourceExhausted,
    StoreBusy,
    Unauthenticated,
)
from shared.grpc_server import status_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("weight_kg", "must be > 0"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("unit U1"), grpc.StatusCode.NOT_FOUND),
        (PreconditionFailed("unit is quarantined"), grpc.StatusCode.FAILED_PRECONDITION),
        (ConcurrencyConflict("U1", 3, 4), grpc.StatusCode.ABORTED),
        (Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied("hospital"), grpc.StatusCode.PERMISSION_DENIED),
        (StoreBusy("lock"), grpc.StatusCode.UNAVAILABLE),
        (ResourceExhausted("4 open streams"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_domain_errors_map_to_their_status(error, code):
    assert status_for(error) == code


def test_invalid_argument_names_field_and_rule():
    assert str(InvalidArgument("weight_kg", "must be > 0")) == "weight_kg: must be > 0"
