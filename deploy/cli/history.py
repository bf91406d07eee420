"""`cellbank audit log`: who did what, when and why to an aggregate, e-signatures included."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from cellbank.operator.v1 import operator_service_pb2 as opb

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


def audit_log(
    io: Streams,
    endpoints_file: str | None,
    aggregate: str,
    site: str | None,
    as_json: bool,
    timeout: float,
) -> int:
    """Ask every service of the site(s): an id may name aggregates in more than one store (a
    unit is made by manufacturing and kept by storage), and each store tells its part."""
    endpoints = load_endpoints(endpoints_file)
    token = signed_in_token(endpoints)
    sites = endpoints.site_names(site)
    histories, failures = [], []
    for name in sites:
        for service, address in endpoints.services_of(name):
            try:
                found = fetch_history(name, service, address, aggregate, token, timeout)
            except CliError as exc:
                failures.append(str(exc))
                continue
            if found is not None:
                histories.append(found)
    for history in histories:
        lines = map(json.dumps, history_records(history)) if as_json else history_lines(history)
        for line in lines:
            io.print(line)
    if failures and not histories:
        raise CliError("; ".join(failures))
    for failure in failures:  # found elsewhere, but part of the story may be missing
        io.warn(f"warning: {failure}")
    if not histories:
        io.warn(f"aggregate {aggregate!r} not found at any service of {', '.join(sites)}")
        return 1
    return 0
