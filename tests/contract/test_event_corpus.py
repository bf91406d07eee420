"""Schema evolution: a frozen corpus of encoded historical events must keep decoding.

Event messages only gain fields. Each line of corpus/*.jsonl is an event as it was encoded when
written (payload) and the field values it carried; today's codec must decode it to the same
values. New event types must be added to the corpus:
    CELLBANK_WRITE_CORPUS=1 .venv/bin/python -m pytest tests/contract/test_event_corpus.py
appends the missing ones (existing lines are never rewritten).
"""

from __future__ import annotations

import base64
import json
import os
import warnings
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from services.delivery.adapters.codec import CODEC as DELIVERY_CODEC
from services.donor_intake.adapters.codec import CODEC as DONOR_CODEC
from services.manufacturing.adapters.codec import CODEC as MANUFACTURING_CODEC
from services.matching.adapters.codec import CODEC as MATCHING_CODEC
from services.storage.adapters.codec import CODEC as STORAGE_CODEC
from shared.commands import ProtoEventCodec
from shared.proto_mapping import to_proto

CORPUS = Path(__file__).parent / "corpus"
CODECS = {
    "donor": DONOR_CODEC,
    "manufacturing": MANUFACTURING_CODEC,
    "storage": STORAGE_CODEC,
    "matching": MATCHING_CODEC,
    "delivery": DELIVERY_CODEC,
}


def _fields(codec: ProtoEventCodec, event: object) -> dict[str, object]:
    return MessageToDict(
        to_proto(event, codec._by_class[type(event)]), preserving_proto_field_name=True
    )


def _lines(context: str) -> list[dict[str, object]]:
    path = CORPUS / f"{context}.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.exists()
        else []
    )


def _write_missing(context: str, codec: ProtoEventCodec) -> None:
    from hypothesis.errors import NonInteractiveExampleWarning

    from tests.support.strategies import dataclass_strategy

    have = {line["event_type"] for line in _lines(context)}
    with open(CORPUS / f"{context}.jsonl", "a") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        for cls, message_cls in codec._by_class.items():
            if message_cls.DESCRIPTOR.full_name in have:
                continue
            event: object = dataclass_strategy(cls).example()
            event_type, payload = codec.encode(event)
            record = {
                "event_type": event_type,
                "schema_version": codec.schema_version,
                "payload": base64.b64encode(payload).decode(),
                "fields": _fields(codec, event),
            }
            out.write(json.dumps(record, sort_keys=True) + "\n")


@pytest.mark.parametrize("context", sorted(CODECS))
def test_every_historical_event_still_decodes_to_the_same_values(context):
    codec = CODECS[context]
    if os.environ.get("CELLBANK_WRITE_CORPUS") == "1":
        _write_missing(context, codec)
    lines = _lines(context)
    assert lines, f"no corpus for {context}"
    for line in lines:
        event = codec.decode(str(line["event_type"]), base64.b64decode(str(line["payload"])))
        assert _fields(codec, event) == line["fields"], line["event_type"]


@pytest.mark.parametrize("context", sorted(CODECS))
def test_every_event_type_has_a_frozen_example(context):
    have = {line["event_type"] for line in _lines(context)}
    missing = sorted(set(CODECS[context].event_types()) - have)
    assert not missing, f"add them with CELLBANK_WRITE_CORPUS=1: {missing}"
