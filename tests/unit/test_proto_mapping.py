"""shared.proto_mapping.from_proto: the slots of a plain slotted dataclass are set directly,
with the same result as calling the class; a class with its own construction is called."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from datetime import UTC, datetime

import pytest
from cellbank.common.v1 import envelope_pb2

from shared.proto_mapping import _sets_slots, from_proto


@dataclass(frozen=True, slots=True)
class Plain:
    event_id: str
    aggregate_version: int
    recorded_at: datetime
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Checked:
    event_id: str
    recorded_at: datetime

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("event_id is required")


@dataclass(frozen=True)
class Unslotted:
    event_id: str
    recorded_at: datetime


def envelope(event_id: str = "e-1", seconds: int = 1_700_000_000) -> envelope_pb2.EventEnvelope:
    env = envelope_pb2.EventEnvelope(event_id=event_id, aggregate_version=7, payload=b"\x01")
    env.recorded_at.seconds, env.recorded_at.nanos = seconds, 123_456_789
    return env


def test_a_plain_slotted_dataclass_is_built_as_its_constructor_builds_it():
    assert _sets_slots(Plain)
    built = from_proto(envelope(), Plain)
    at = datetime.fromtimestamp(1_700_000_000, UTC).replace(microsecond=123_456)
    assert built == Plain("e-1", 7, at, b"\x01")
    assert hash(built) == hash(Plain("e-1", 7, at, b"\x01"))
    with pytest.raises(FrozenInstanceError):
        built.event_id = "other"


def test_a_bad_converted_value_raises_as_the_constructor_path_does():
    with pytest.raises(ValueError, match="timestamp out of range"):
        from_proto(envelope(seconds=10**12), Plain)


def test_a_class_with_its_own_checks_or_without_slots_is_called():
    assert not _sets_slots(Checked) and not _sets_slots(Unslotted)
    with pytest.raises(ValueError, match="event_id is required"):
        from_proto(envelope(event_id=""), Checked)
    assert from_proto(envelope(), Unslotted).event_id == "e-1"


def test_a_class_whose_init_is_its_own_code_is_called():
    @dataclass(frozen=True, slots=True)
    class OwnInit:
        event_id: str

        def __init__(self, event_id: str) -> None:
            object.__setattr__(self, "event_id", event_id.upper())

    assert not _sets_slots(OwnInit)
    assert from_proto(envelope(), OwnInit).event_id == "E-1"
