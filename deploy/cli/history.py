"""`cellbank audit log`: who did what, when and why to an aggregate, e-signatures included."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from cellbank.operator.v1 import operator_service_pb2 as opb

from deploy.cli.as_of import StatesFound, fetch_states, reached, state_request
from deploy.cli.calls import bearer, call_problem, operator_call, rpc_code
from deploy.cli.console import Streams, json_moment, moment
from deploy.cli.endpoints import load_endpoints, signed_in_token
from deploy.cli.errors import CliError


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    signed_at: str
    meaning: str
    subject: str = ""  # the signer's id at the identity provider (Part 11)
    event_id: str = ""  # the signed record: the event holding the signature …
    content_hash: str = ""  # … and the SHA-256 of what was signed


def signatures(payload: object) -> list[Signature]:
    """Every e-signature in a decoded payload: any field named `signature` holding a signer
    (name or signer), a meaning and, if recorded, when (signed_at), at any depth."""
    found: list[Signature] = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            for candidate in value if isinstance(value, list) else [value]:
                if key == "signature" and isinstance(candidate, dict):
                    signer = (
                        candidate.get("name")
                        or candidate.get("signer_name")
                        or candidate.get("signer")
                    )
                    if signer and candidate.get("meaning"):
                        found.append(
                            Signature(
                                str(signer),
                                str(candidate.get("signed_at", "")),
                                str(candidate["meaning"]),
                                str(
                                    candidate.get("subject")
                                    or candidate.get("signer_subject")
                                    or ""
                                ),
                                str(candidate.get("event_id", "")),
                                str(candidate.get("content_hash", "")),
                            )
                        )
                        continue
                found.extend(signatures(candidate))
    elif isinstance(payload, list):
        for item in payload:
            found.extend(signatures(item))
    return found


def short_type(event_type: str) -> str:
    return event_type.rsplit(".", 1)[-1]


def decoded_payload(entry: opb.HistoryEntry) -> object:
    try:
        payload: object = json.loads(entry.payload_json or "{}")
    except json.JSONDecodeError:
        return {"undecodable_json": entry.payload_json}
    return payload


def history_lines(history: opb.AggregateHistory) -> Iterator[str]:
    """A header, then one row per event (time, actor, type, reason) and a line per signature."""
    yield (
        f"{history.site_id} {history.service}: {history.aggregate_type or 'aggregate'} "
        f"{history.aggregate_id} ({len(history.entries)} events)"
    )
    width = max((len(short_type(e.event_type)) for e in history.entries), default=0)
    actor_width = max((len(e.actor) for e in history.entries), default=0)
    for entry in history.entries:
        yield (
            f"  {moment(entry.occurred_at)}  {entry.actor:<{actor_width}}  "
            f"{short_type(entry.event_type):<{width}}  {entry.reason}"
        ).rstrip()
        for signature in signatures(decoded_payload(entry)):
            yield (
                f"      signed by {signature.name} at {json_moment(signature.signed_at)}: "
                f'"{signature.meaning}"'
            )
            if signature.subject or signature.content_hash:
                yield (
                    f"        signer id {signature.subject or '-'}; signed record "
                    f"{signature.event_id or '-'} sha256 {signature.content_hash or '-'}"
                )
    yield from trace_lines(history)


def trace_lines(history: opb.AggregateHistory) -> Iterator[str]:
    """The traces the events were appended in, each with its events: the id to search for in
    the tracing UI (README, "Tracing"), where the request shows across sites."""
    traced: dict[str, list[str]] = {}
    for entry in history.entries:
        if entry.trace_id:
            traced.setdefault(entry.trace_id, []).append(short_type(entry.event_type))
    for trace_id, types in traced.items():
        yield f"  trace {trace_id}: {', '.join(types)}"


def history_records(history: opb.AggregateHistory) -> Iterator[dict[str, Any]]:
    """One JSON-ready object per event, with the payload and its signatures decoded."""
    for entry in history.entries:
        payload = decoded_payload(entry)
        yield {
            "site_id": history.site_id,
            "service": history.service,
            "aggregate_id": history.aggregate_id,
            "aggregate_type": history.aggregate_type,
            "position": entry.position,
            "version": entry.version,
            "event_id": entry.event_id,
            "event_type": entry.event_type,
            "occurred_at": entry.occurred_at.ToJsonString(),
            "recorded_at": entry.recorded_at.ToJsonString(),
            "actor": entry.actor,
            "reason": entry.reason,
            "correlation_id": entry.correlation_id,
            "trace_id": entry.trace_id,
            "payload": payload,
            "signatures": [dataclasses.asdict(s) for s in signatures(payload)],
        }


def state_output(found: StatesFound | None, as_of: datetime, as_json: bool) -> Iterator[str]:
    """The folded state as of the moment: `key: value` lines under a header, or one JSON
    object (its `state` beside the version and position); nothing where the service folds no aggregate."""
    if found is None:
        return
    at = f"{as_of:%Y-%m-%dT%H:%M:%SZ}"
    for state in found.states:
        if as_json:
            yield json.dumps(
                {"site_id": found.site_id, "service": found.service, "as_of": at,
                 "position": found.position, **state}
            )  # fmt: skip
            continue
        yield (
            f"{found.site_id} {found.service}: {state['aggregate_type']} "
            f"{state['aggregate_id']} as of {at} (version {state['version']}, {reached(found)})"
        )
        for key, value in state["state"].items():
            yield f"  {key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"


def fetch_history(
    site: str, service: str, address: str, aggregate_id: str, token: str, timeout: float
) -> opb.AggregateHistory | None:
    """The aggregate's history in one service's store; None when that store never saw it."""
    request = opb.GetAggregateHistoryRequest(aggregate_id=aggregate_id)
    try:
        history: opb.AggregateHistory = operator_call(
            address,
            lambda stub: stub.GetAggregateHistory(request, metadata=bearer(token), timeout=timeout),
        )
    except grpc.RpcError as err:
        if rpc_code(err) == grpc.StatusCode.NOT_FOUND:
            return None
        raise CliError(f"{site} {service} {call_problem(address, err)}") from None
    return history


def history_until(history: opb.AggregateHistory, as_of: datetime) -> opb.AggregateHistory:
    """The history's events recorded at or before `as_of` (entries are in version order)."""
    until = opb.AggregateHistory()
    until.CopyFrom(history)
    del until.entries[:]
    until.entries.extend(
        e for e in history.entries if e.recorded_at.ToDatetime(tzinfo=UTC) <= as_of
    )
    return until


def state_then(
    history: opb.AggregateHistory, address: str, as_of: datetime, token: str, timeout: float
) -> StatesFound | None:
    """The aggregate's state as of the moment, folded by its service; None where the service
    folds no aggregate (its history up to then is all there is)."""
    request = state_request(as_of, None, aggregate_id=history.aggregate_id)
    return fetch_states(
        history.site_id, history.service, address, request, token, timeout,
        refused=lambda err: rpc_code(err) is grpc.StatusCode.FAILED_PRECONDITION,
    )  # fmt: skip


def audit_log(
    io: Streams,
    endpoints_file: str | None,
    aggregate: str,
    site: str | None,
    as_json: bool,
    timeout: float,
    as_of: datetime | None = None,
) -> int:
    """Ask every service of the site(s): an id may name aggregates in more than one store (a
    unit is made by manufacturing and kept by storage), and each store tells its part. With
    `as_of`, each part is its state then (where the service folds it) and its events up to
    then."""
    endpoints = load_endpoints(endpoints_file)
    token = signed_in_token(endpoints)
    sites = endpoints.site_names(site)
    histories, failures = [], []
    for name in sites:
        for service, address in endpoints.services_of(name):
            try:
                found = fetch_history(name, service, address, aggregate, token, timeout)
                if found is not None and as_of is not None:
                    found = history_until(found, as_of)
                    if not found.entries:
                        continue  # not yet known there then
                    then = state_then(found, address, as_of, token, timeout)
                    for line in state_output(then, as_of, as_json):
                        io.print(line)
            except CliError as exc:
                failures.append(str(exc))
                continue
            if found is not None:
                histories.append(found)
                lines = map(json.dumps, history_records(found)) if as_json else history_lines(found)
                for line in lines:
                    io.print(line)
    if failures and not histories:
        raise CliError("; ".join(failures))
    for failure in failures:  # found elsewhere, but part of the story may be missing
        io.warn(f"warning: {failure}")
    if not histories:
        by = f" by {as_of:%Y-%m-%dT%H:%M:%SZ}" if as_of is not None else ""
        io.warn(f"aggregate {aggregate!r} not found at any service of {', '.join(sites)}{by}")
        return 1
    return 0
