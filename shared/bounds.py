"""Input limits: the longest string and the most items any request field may carry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# Every string field of every request message of every gRPC service is bounded, in characters
# (Unicode code points), and every repeated field in items; nested messages are walked. A field
# not named below gets the default for its name, so a new field is bounded the day it is added.
NAME_CHARS = 200  # identifiers, names, codes, places, signature meanings, statuses
TEXT_CHARS = 2_000  # free text: why something was done, what happened
ITEMS = 32  # any repeated field (the 26 units of a release, a patient's alleles, KIR genes, …)

# Free text, by field name in any request message.
TEXT_FIELDS = frozenset(
    {"reason", "description", "detail", "why", "comment", "note", "text", "route"}
    | {"urgent_physician_request"}
)

# Where a contract needs another bound, by full field name.
CHARS: dict[str, int] = {
    # The hospital contract has always taken an adverse-event description of 4,000 characters.
    "cellbank.hospital.v1.ReportAdverseEventRequest.description": 4_000,
    # A directory on the server's disk (Linux PATH_MAX).
    "cellbank.matching.v1.ApproveHlaReferenceRequest.directory": 4_096,
}
COUNTS: dict[str, int] = {
    # Any box of a tank may be segregated; a tank has at most 20,000 positions, so boxes.
    "cellbank.storage.v1.RegisterTankRequest.segregated_boxes": 20_000,
    # An ambiguous (intermediate-resolution) typing lists every allele it cannot rule out.
    "cellbank.donor.v1.HlaLocus.alleles": 64,
}

# Transport limits (shared/grpc_server.py, the event stores, the matching and operator streams).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a gRPC message either way; larger → RESOURCE_EXHAUSTED
MAX_CONCURRENT_RPCS = 256  # per server; beyond it grpc answers RESOURCE_EXHAUSTED
STREAMS_PER_CALLER = 4  # open WatchOrder / WatchEvents streams of one principal, per server
# An event's envelope as the relay publishes it. Kafka's default max.message.bytes is 1 MiB per
# record batch; the margin covers the record's key, headers and batch framing.
MAX_ENVELOPE_BYTES = 900_000


def max_chars(field: FieldDescriptor) -> int:
    """The longest string a field may hold, in characters."""
    default = TEXT_CHARS if field.name in TEXT_FIELDS else NAME_CHARS
    return CHARS.get(field.full_name, default)


def max_items(field: FieldDescriptor) -> int:
    """The most items a repeated (or map) field may hold."""
    return COUNTS.get(field.full_name, ITEMS)


def violation(message: object, prefix: str = "") -> str:
    """The first field over its bound, named with the rule ("reason: at most 2000 characters
    (got 600000)"); "" when every field is within bounds (or it is not a message at all)."""
    if not isinstance(message, Message):
        return ""
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.is_repeated and len(value) > max_items(field):
            return f"{path}: at most {max_items(field)} items (got {len(value)})"
        for where, item in _items(field, path, value):
            found = _over(field, where, item)
            if found:
                return found
    return ""


def _items(field: FieldDescriptor, path: str, value: Any) -> Iterable[tuple[str, Any]]:
    if not field.is_repeated:
        return [(path, value)]
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        return [(f"{path}[{key!r:.40}]", item) for key, item in value.items()] + [
            (f"{path} key", key) for key in value
        ]
    return [(f"{path}[{i}]", item) for i, item in enumerate(value)]


def _over(field: FieldDescriptor, where: str, item: Any) -> str:
    if isinstance(item, Message):
        return violation(item, where + ".")
    if isinstance(item, str | bytes) and len(item) > max_chars(field):
        unit = "characters" if isinstance(item, str) else "bytes"
        return f"{where}: at most {max_chars(field)} {unit} (got {len(item)})"
    return ""
