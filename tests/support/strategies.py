"""Hypothesis strategies that build domain dataclasses field by field from their type hints."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")

INT32 = (-(2**31), 2**31 - 1)
TIMEZONES = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)))


def dataclass_strategy(cls: type[T], **overrides: st.SearchStrategy[Any]) -> st.SearchStrategy[T]:
    """Instances of cls with every value a protobuf message can carry back unchanged.

    Floats are finite (NaN never equals itself), ints fit int32, datetimes are timezone-aware
    within the Timestamp range; overrides replace the strategy of the fields they name.
    """
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: overrides[f.name] if f.name in overrides else value_strategy(hints[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    return st.builds(cls, **fields)


def value_strategy(tp: Any) -> st.SearchStrategy[Any]:
    """The strategy for one field type: scalars, enums, dates, nested dataclasses, tuples."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        strategy = st.one_of(*(value_strategy(a) for a in options))
        return st.none() | strategy if type(None) in typing.get_args(tp) else strategy
    if typing.get_origin(tp) is tuple:
        item, *_rest = typing.get_args(tp)
        return st.lists(value_strategy(item), max_size=4).map(tuple)
    if dataclasses.is_dataclass(tp):
        return dataclass_strategy(typing.cast(type, tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(tp)
    scalars: dict[Any, st.SearchStrategy[Any]] = {
        str: st.text(max_size=16),
        bool: st.booleans(),
        int: st.integers(*INT32),
        float: st.floats(allow_nan=False, allow_infinity=False),
        date: st.dates(),
        datetime: st.datetimes(
            min_value=datetime(1900, 1, 1),
            max_value=datetime(2200, 1, 1),
            timezones=st.sampled_from(TIMEZONES),
        ),
    }
    if tp not in scalars:
        raise TypeError(f"no strategy for {tp!r}")
    return scalars[tp]
