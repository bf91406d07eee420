"""Calling a site's services over gRPC: the bearer token, a channel per call, what went wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from cellbank.operator.v1 import operator_service_pb2_grpc as opb_grpc

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
# gRPC codes that mean "nobody answered", as opposed to "it answered no".
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def operator_call(address: str, call: Callable[[opb_grpc.OperatorServiceStub], T]) -> T:
    """Run `call` against the OperatorService at `address` on a channel of its own (the
    synchronous client: a CLI has nothing else to do while it waits)."""
    with grpc.insecure_channel(address) as channel:
        return call(opb_grpc.OperatorServiceStub(channel))


def rpc_code(error: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


def rpc_problem(error: grpc.RpcError) -> str:
    """`CODE: details` of a failed call, for messages naming the service."""
    details = error.details() or ""
    return f"{rpc_code(error).name}: {details}".rstrip(": ")


def call_problem(address: str, error: grpc.RpcError) -> str:
    """Why a call got no usable answer: `unreachable at ADDR (…)` or `refused the call …`."""
    if rpc_code(error) in UNREACHABLE:
        return f"unreachable at {address} ({rpc_problem(error)})"
    return f"refused the call at {address} ({rpc_problem(error)})"
