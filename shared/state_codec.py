"""An aggregate's state as compact JSON and back, by its dataclass type hints (as-of snapshots).

The snapshots of shared/state_as_of.py keep every folded aggregate's state every so many
events. States are the domain's frozen dataclasses; this writes them without a schema of their
own: a dataclass is the list of its field values in field order, an Enum its value, a date or
datetime its ISO 8601 text, a tuple, set or frozenset a list, a dict a list of [key, value]
pairs, `X | None` null or X. `shape(cls)` fingerprints the types involved: a snapshot written
with another shape (a field added, renamed, retyped) is never read (shared/state_as_of.py
discards it and folds again). A type it cannot write raises TypeError when the codec is built,
so a service declaring such a state fails at start, not at its first snapshot.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
import typing
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

Convert = Callable[[Any], Any]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode
_loads = json.loads


@dataclasses.dataclass(frozen=True, slots=True)
class StateCodec:
    """Encodes states of one dataclass type to JSON bytes and back."""

    cls: type
    shape: str  # fingerprint of the state's types (hex)
    _out: Convert
    _in: Convert

    def encode(self, state: Any) -> bytes:
        return _dumps(self._out(state)).encode()

    def decode(self, data: bytes) -> Any:
        return self._in(_loads(data))


def codec_for(cls: type) -> StateCodec:
    """The codec of dataclass `cls`; TypeError if one of its field types has no JSON form."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    described: list[str] = []
    out, into = _converters(cls, described, set())
    return StateCodec(cls, hashlib.sha256("\n".join(described).encode()).hexdigest(), out, into)


def _converters(tp: Any, described: list[str], seen: set[Any]) -> tuple[Convert, Convert]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise TypeError(f"unions other than X | None have no JSON form: {tp!r}")
        out, into = _converters(rest[0], described, seen)
        described.append("optional")
        return (
            lambda v: None if v is None else out(v),
            lambda v: None if v is None else into(v),
        )
    if origin in (tuple, frozenset, set) or tp in (tuple, frozenset, set):
        container = origin or tp
        if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"only tuple[X, ...] has a JSON form, not {tp!r}")
        if not args:
            raise TypeError(f"{tp!r}: the item type must be given")
        out, into = _converters(args[0], described, seen)
        described.append(f"{container.__name__} of")
        return (lambda v: [out(x) for x in v], lambda v: container(into(x) for x in v))
    if origin is dict or tp is dict:
        if len(args) != 2:
            raise TypeError(f"{tp!r}: the key and value types must be given")
        key_out, key_in = _converters(args[0], described, seen)
        value_out, value_in = _converters(args[1], described, seen)
        described.append("dict of")
        return (
            lambda v: [[key_out(k), value_out(x)] for k, x in v.items()],
            lambda v: {key_in(k): value_in(x) for k, x in v},
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if not all(type(m.value) in (str, int, float, bool) for m in tp):
            raise TypeError(
                f"{tp.__qualname__}: only str, int, float or bool values have a JSON form"
            )
        described.append(f"enum {tp.__qualname__} {sorted(repr(m.value) for m in tp)}")
        members = tp._value2member_map_

        def member(value: Any) -> Any:
            found = members.get(value)
            return tp(value) if found is None else found  # an unknown value raises as tp does

        return (lambda v: v.value), member
    if tp is datetime:
        described.append("datetime")
        return (lambda v: v.isoformat()), datetime.fromisoformat
    if tp is date:
        described.append("date")
        return (lambda v: v.isoformat()), date.fromisoformat
    if tp in (str, int, float, bool):
        described.append(tp.__name__)
        return _same, _same
    if dataclasses.is_dataclass(tp):
        return _dataclass_converters(tp, described, seen)
    raise TypeError(f"{tp!r} has no JSON form for a state snapshot")


def _same(value: Any) -> Any:
    return value


def _dataclass_converters(
    cls: Any, described: list[str], seen: set[Any]
) -> tuple[Convert, Convert]:
    if cls in seen:
        raise TypeError(f"{cls.__qualname__} contains itself: no JSON form")
    seen = seen | {cls}
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    if any(not f.init for f in fields):
        raise TypeError(f"{cls.__qualname__}: every field must be an init field")
    described.append(f"dataclass {cls.__module__}.{cls.__qualname__} {[f.name for f in fields]}")
    plans = [(f.name, *_converters(hints[f.name], described, seen)) for f in fields]
    # Written once per class: one call a state, not one a field.
    namespace: dict[str, Any] = {"cls": cls}
    outs, ins = [], []
    for i, (name, out, into) in enumerate(plans):
        plain = out is _same
        namespace[f"out_{i}"], namespace[f"in_{i}"] = out, into
        outs.append(f"o.{name}" if plain else f"out_{i}(o.{name})")
        ins.append(f"{name}=v[{i}]" if plain else f"{name}=in_{i}(v[{i}])")  # kw_only too
    count = len(plans)
    source = (
        f"def out(o):\n    return [{', '.join(outs)}]\n"
        f"def into(v):\n"
        f"    if len(v) != {count}:\n"
        f"        raise ValueError('{cls.__qualname__}: expected {count} values, got %d' % len(v))\n"
        f"    return cls({', '.join(ins)})\n"
    )
    exec(source, namespace)  # code built from the dataclass's own field names
    return namespace["out"], namespace["into"]
