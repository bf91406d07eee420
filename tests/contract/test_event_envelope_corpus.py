"""The frozen envelopes of every published event type still parse, decode and apply.

corpus/envelopes.jsonl holds realistic histories encoded when they were written (by
write_event_corpus.py, run once per new event type, never by this test): README, "Changing an
event". Only the envelope, the generated messages and the OWNING service's codec and aggregates
are used here; consumers translate foreign events in their own anti-corruption modules.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest
from cellbank.common.v1.envelope_pb2 import EventEnvelope
from google.protobuf import descriptor_pool, message_factory

from deploy.processes import REPO_ROOT
from shared.commands import Aggregate
from shared.envelope_codec import from_envelope

CORPUS = Path(__file__).parent / "corpus" / "envelopes.jsonl"
# The service that owns (writes) each context's events.
OWNER = {
    "donor": "donor_intake",
    "manufacturing": "manufacturing",
    "storage": "storage",
    "matching": "matching",
    "delivery": "delivery",
}
# Messages of an events.proto that are not events: sent bare, never in an envelope.
NOT_EVENTS = {  # telemetry, cellbank.telemetry.v1
    "cellbank.storage.v1.TemperatureReading",
    "cellbank.storage.v1.TemperatureReadingBatch",
}


def _events_modules() -> dict[str, ModuleType]:
    protos = REPO_ROOT / "protos"
    return {
        path.parent.parent.name: importlib.import_module(
            ".".join(path.relative_to(protos).with_suffix("").parts) + "_pb2"
        )
        for path in sorted(protos.glob("cellbank/*/v1/events.proto"))
    }


def _declared_event_types() -> set[str]:
    """Top-level messages of the events protos that no other message there nests: the events."""
    declared = set()
    for module in _events_modules().values():
        messages = module.DESCRIPTOR.message_types_by_name.values()
        nested = {f.message_type.full_name for m in messages for f in m.fields if f.message_type}
        declared |= {m.full_name for m in messages if m.full_name not in nested}
    return declared - NOT_EVENTS


def _corpus() -> list[EventEnvelope]:
    lines = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    envelopes = [EventEnvelope.FromString(base64.b64decode(line["envelope"])) for line in lines]
    for line, envelope in zip(lines, envelopes, strict=True):
        assert envelope.event_type == line["event_type"]
    return envelopes


def _context(event_type: str) -> str:
    return event_type.split(".")[1]  # cellbank.<context>.v1.<Message>


def _aggregates(context: str) -> dict[str, Aggregate[object]]:
    codec = importlib.import_module(f"services.{OWNER[context]}.adapters.codec")
    found = [a for a in vars(codec).values() if isinstance(a, Aggregate)]
    return {a.aggregate_type: a for a in found}


def test_every_published_event_type_has_a_frozen_envelope():
    missing = _declared_event_types() - {e.event_type for e in _corpus()}
    assert not missing, (
        f"new event types need a history in tests/contract/write_event_corpus.py: {sorted(missing)}"
    )


def test_every_frozen_payload_decodes_with_the_generated_message_its_event_type_names():
    _events_modules()  # registers the generated messages in the default pool
    for envelope in _corpus():
        assert envelope.event_id and envelope.aggregate_id and envelope.schema_version >= 1
        descriptor = descriptor_pool.Default().FindMessageTypeByName(envelope.event_type)
        message = message_factory.GetMessageClass(descriptor)()
        message.ParseFromString(envelope.payload)
        assert message.SerializeToString(deterministic=True) == envelope.payload, (
            f"{envelope.event_type} does not round-trip: a field was retyped or renumbered"
        )


@pytest.mark.parametrize("context", sorted(OWNER))
def test_every_frozen_history_still_applies_to_its_owning_aggregate(context):
    histories: dict[tuple[str, str], list[EventEnvelope]] = defaultdict(list)
    for envelope in _corpus():
        if _context(envelope.event_type) == context:
            histories[envelope.aggregate_type, envelope.aggregate_id].append(envelope)
    assert histories, f"no frozen events of {context}"
    aggregates = _aggregates(context)
    for (aggregate_type, aggregate_id), envelopes in histories.items():
        aggregate = aggregates[aggregate_type]
        state = aggregate.fold([from_envelope(e) for e in envelopes])
        assert state != aggregate.initial, f"{aggregate_type} {aggregate_id} did not change"
