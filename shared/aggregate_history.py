"""An aggregate's events as an operator reads them: envelope fields and the payload as JSON.

The payload is decoded generically, by the full protobuf message name in `event_type`, from the
default descriptor pool. So that any service can render any context's events (an aggregate's
history is read where it is owned, but the tool is the same everywhere), every context's
`cellbank.<context>.v1.events_pb2` is imported once, at first use, discovered on disk rather
than listed here: a new context is covered the day its protos are generated.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from types import ModuleType

from cellbank.operator.v1 import operator_service_pb2 as pb
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from shared.errors import NotFound
from shared.events import StoredEvent
from shared.redaction import redact_event
from shared.tracing import trace_id_of

log = logging.getLogger(__name__)

PROTO_PACKAGE = "cellbank"
EVENTS_MODULE = "{package}.{context}.v1.events_pb2"


def event_module_names(package: str = PROTO_PACKAGE) -> list[str]:
    """`<package>.<context>.v1.events_pb2` of every context folder that has generated events.

    The context folders are namespace packages (no __init__.py), which pkgutil.iter_modules
    does not list, so they are read from the package's search locations instead.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return []
    contexts = sorted(
        {
            folder.name
            for location in spec.submodule_search_locations
            for folder in Path(location).iterdir()
            if (folder / "v1").is_dir()
        }
    )
    names = [EVENTS_MODULE.format(package=package, context=c) for c in contexts]
    return [name for name in names if importlib.util.find_spec(name) is not None]


def import_modules(
    names: Iterable[str], import_module: Callable[[str], ModuleType] = importlib.import_module
) -> dict[str, str]:
    """Import each module (registering its messages); {name: error} of those that failed.

    A context whose generated code is stale or broken must not take the whole history tool
    down: its events are then shown as undecodable, and the failure is logged.
    """
    failed: dict[str, str] = {}
    for name in names:
        try:
            import_module(name)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.warning(
                "event module not importable", extra={"events_module": name, "error": str(exc)}
            )
    return failed


@cache
def register_event_messages() -> dict[str, str]:
    """Once per process: import every context's events_pb2; the failures, by module."""
    return import_modules(event_module_names())


def payload_json(event_type: str, payload: bytes) -> str:
    """The payload as compact protobuf JSON with the .proto field names, or, when the type is
    unknown here or the bytes do not parse as it, `{"undecodable": "<base64>"}`: the bytes are
    never hidden from an auditor."""
    register_event_messages()
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(event_type)
        message = message_factory.GetMessageClass(descriptor)()
        message.ParseFromString(payload)
    except (KeyError, DecodeError):
        return json.dumps({"undecodable": base64.b64encode(payload).decode("ascii")})
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)


def _ts(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def history_entry(event: StoredEvent, roles: frozenset[str] | None = None) -> pb.HistoryEntry:
    """One event of a history; with `roles`, its personal fields redacted for them."""
    payload, reason = payload_json(event.event_type, event.payload), event.reason
    if roles is not None:
        payload, reason = redact_event(event.event_type, payload, reason, roles)
    return pb.HistoryEntry(
        position=event.position,
        version=event.aggregate_version,
        event_type=event.event_type,
        occurred_at=_ts(event.occurred_at),
        recorded_at=_ts(event.recorded_at),
        actor=event.actor,
        reason=reason,
        payload_json=payload,
        event_id=event.event_id,
        correlation_id=event.correlation_id,
        trace_id=trace_id_of(event.traceparent),
    )


def aggregate_history(
    aggregate_id: str,
    events: Sequence[StoredEvent],
    *,
    site_id: str,
    service: str,
    roles: frozenset[str] | None = None,
) -> pb.AggregateHistory:
    """The history of one aggregate in one store; NotFound when the store has none of it (an
    aggregate lives in exactly one store, so callers ask each service until one knows it)."""
    if not events:
        raise NotFound(f"aggregate {aggregate_id!r} has no events in {site_id} {service}")
    return pb.AggregateHistory(
        aggregate_id=aggregate_id,
        aggregate_type=events[0].aggregate_type,
        site_id=events[0].site_id or site_id,
        service=service,
        entries=[history_entry(e, roles) for e in events],
    )
