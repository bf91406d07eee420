"""State snapshots' codec (shared/state_codec.py): every storage state round-trips exactly, the
shape changes with the types, and a type without a JSON form is refused when the codec is built."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.storage.domain import model
from shared.state_codec import codec_for

texts = st.text(max_size=12)
moments = st.datetimes(timezones=st.just(UTC))
units = st.builds(
    model.StoredUnit,
    unit_id=texts,
    status=st.sampled_from(model.UnitStatus),
    address=texts,
    facts=st.none() | st.builds(
        model.UnitFacts, texts, texts, texts, st.floats(allow_nan=False), st.floats(0, 1e12),
        st.floats(0, 1e3), st.dates(), st.booleans(),
    ),
    reservation=st.none() | st.builds(model.Reservation, texts, moments),
    quarantine_causes=st.lists(texts, max_size=3).map(tuple),
    picked_for=texts,
)  # fmt: skip
tanks = st.builds(
    model.Tank, texts, st.dictionaries(texts, st.booleans(), max_size=5),
    st.dictionaries(texts, texts, max_size=5),
)  # fmt: skip


@given(units)
def test_every_unit_state_round_trips(unit: model.StoredUnit) -> None:
    codec = codec_for(model.StoredUnit)
    assert codec.decode(codec.encode(unit)) == unit


@given(tanks)
def test_every_tank_state_round_trips(tank: model.Tank) -> None:
    codec = codec_for(model.Tank)
    back = codec.decode(codec.encode(tank))
    assert back == tank and list(back.occupant) == list(tank.occupant)


@dataclass(frozen=True)
class V1:
    a: str = ""


@dataclass(frozen=True)
class V2:
    a: str = ""
    b: int = 0


class Colour(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Everything:
    when: datetime
    day: date
    colour: Colour
    tags: frozenset[str] = frozenset()
    by_number: dict[int, tuple[float, ...]] = field(default_factory=dict)
    inner: V2 | None = None


def test_the_shape_is_the_types_and_a_snapshot_of_another_shape_is_told_apart() -> None:
    assert codec_for(V1).shape == codec_for(V1).shape
    assert codec_for(V1).shape != codec_for(V2).shape
    assert codec_for(model.StoredUnit).shape != codec_for(model.Tank).shape
    with pytest.raises(ValueError, match="expected 2 values, got 1"):
        codec_for(V2).decode(codec_for(V1).encode(V1("x")))


def test_sets_dicts_with_other_keys_nested_optionals_and_enums_round_trip() -> None:
    value = Everything(
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), date(2030, 1, 1), Colour.RED,
        frozenset({"x", "y"}), {3: (1.5, 2.0)}, V2("z", 4),
    )  # fmt: skip
    codec = codec_for(Everything)
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("declared", [int | str, tuple[int, str], list[int], object, dict, "bytes"])
def test_a_type_without_a_json_form_is_refused_when_the_codec_is_built(declared: object) -> None:
    holder: Any = dataclass(frozen=True)(type("Holder", (), {"__annotations__": {"x": declared}}))
    with pytest.raises(TypeError):
        codec_for(holder)


class Level(enum.IntEnum):
    NONE = 0
    SOME = 1


@dataclass(frozen=True, kw_only=True)
class Keyed:
    level: Level
    name: str = ""


class Pair(enum.Enum):
    A = (1, 2)


@dataclass(frozen=True)
class PairHolder:
    pair: Pair


def test_keyword_only_fields_and_falsy_enum_members_round_trip() -> None:
    codec = codec_for(Keyed)
    value = Keyed(level=Level.NONE, name="x")
    back = codec.decode(codec.encode(value))
    assert back == value and back.level is Level.NONE


def test_an_enum_whose_values_have_no_json_form_is_refused_when_the_codec_is_built() -> None:
    with pytest.raises(TypeError, match="only str, int, float or bool values"):
        codec_for(PairHolder)
