"""State as of a moment: the `--as-of TIME` / `--at-position N` options, and GetStateAsOf."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import grpc
import typer
from cellbank.operator.v1 import operator_service_pb2 as opb

from deploy.cli.calls import bearer, call_problem, operator_call, rpc_code
from deploy.cli.console import moment
from deploy.cli.errors import CliError

TIME_RULE = "an ISO 8601 time with its zone, e.g. 2026-11-29T09:00:00Z or 2026-11-29T10:00+01:00"

AsOf = Annotated[
    str | None,
    typer.Option("--as-of", metavar="TIME", help=f"the state at TIME ({TIME_RULE})"),
]
AtPosition = Annotated[
    int | None,
    typer.Option(
        "--at-position", metavar="N", min=1,
        help="the state after the store's event at position N",
    ),
]  # fmt: skip


def parse_time(text: str, option: str = "--as-of", now: datetime | None = None) -> datetime:
    """TIME as an aware UTC datetime; CliError naming the option and the rule when it is not
    one, has no zone, or lies in the future (nothing has happened there yet)."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"{option} {text!r} is not a time: give {TIME_RULE}") from None
    if parsed.tzinfo is None:
        raise CliError(f"{option} {text!r} has no zone: give {TIME_RULE}")
    parsed = parsed.astimezone(UTC)
    current = now or datetime.now(UTC)
    if parsed > current:
        raise CliError(
            f"{option} {text!r} is in the future (now {current:%Y-%m-%dT%H:%M:%SZ}): the state "
            "of a moment that has not happened is not known"
        )
    return parsed


def state_request(
    as_of: datetime | None,
    at_position: int | None,
    aggregate_type: str = "",
    aggregate_id: str = "",
) -> opb.GetStateAsOfRequest:
    if as_of is not None and at_position is not None:
        raise CliError("give --as-of TIME or --at-position N, not both")
    request = opb.GetStateAsOfRequest(
        at_position=at_position or 0, aggregate_type=aggregate_type, aggregate_id=aggregate_id
    )
    if as_of is not None:
        request.as_of.FromDatetime(as_of)
    return request


@dataclass
class StatesFound:
    """One service's answer: where its fold stopped, and the states (JSON decoded)."""

    site_id: str
    service: str
    position: int = 0
    recorded_at: str = ""  # of the event at position, as `moment` shows it ("" = none)
    head_position: int = 0
    states: list[dict[str, Any]] = field(default_factory=list)


def fetch_states(
    site: str,
    service: str,
    address: str,
    request: opb.GetStateAsOfRequest,
    token: str,
    timeout: float,
    refused: Callable[[grpc.RpcError], bool] = lambda _err: False,
) -> StatesFound | None:
    """Every chunk of GetStateAsOf at one service; None when `refused(err)` says the refusal
    is an answer (e.g. the service folds nothing). Bad input is reported in the server's
    words (they name the field and the rule)."""
    found = StatesFound(site, service)

    def read(stub: Any) -> None:
        for chunk in stub.GetStateAsOf(request, metadata=bearer(token), timeout=timeout):
            found.position, found.head_position = chunk.position, chunk.head_position
            if chunk.HasField("recorded_at"):
                found.recorded_at = moment(chunk.recorded_at)
            for s in chunk.states:
                found.states.append(
                    {
                        "aggregate_type": s.aggregate_type,
                        "aggregate_id": s.aggregate_id,
                        "version": s.version,
                        "updated_at": moment(s.updated_at),
                        "state": json.loads(s.state_json),
                    }
                )

    try:
        operator_call(address, read)
    except grpc.RpcError as err:
        if refused(err):
            return None
        if rpc_code(err) is grpc.StatusCode.INVALID_ARGUMENT:
            raise CliError(f"{site} {service}: {err.details()}") from None
        raise CliError(f"{site} {service} {call_problem(address, err)}") from None
    return found


def reached(found: StatesFound) -> str:
    """`position 120 of 340, recorded 2026-11-29T09:00:00Z`."""
    if not found.position:
        return f"before the first event (head {found.head_position})"
    return f"position {found.position} of {found.head_position}, recorded {found.recorded_at}"
