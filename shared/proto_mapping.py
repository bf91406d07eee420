"""Generic mapping between frozen domain dataclasses and protobuf messages of the same shape.

Fields map by name. Supported: str, int, float, bool, datetime (Timestamp), date (ISO string),
str-valued Enum (string), nested dataclasses (messages), tuples of those (repeated), and
`X | None` for datetime/date/dataclass fields (message presence or empty string).
No domain rules here: each service's adapters/codec.py names which class maps to which message.
"""

from __future__ import annotations

import dataclasses
import enum
import keyword
import types
import typing
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

T = TypeVar("T")


_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(cls: Any) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def to_proto(obj: Any, message_cls: type[Message]) -> Message:
    """Build message_cls from a dataclass instance, field by field."""
    message = message_cls()
    for f in dataclasses.fields(obj):
        _set(message, f.name, _hints(type(obj))[f.name], getattr(obj, f.name))
    return message


def _set(message: Message, name: str, tp: Any, value: Any) -> None:
    tp, _optional = _unwrap_optional(tp)
    if value is None:
        return
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        container = getattr(message, name)
        for item in value:
            if dataclasses.is_dataclass(item_tp):
                element = container.add()
                element.CopyFrom(to_proto(item, type(element)))
            else:
                container.append(_scalar_out(item_tp, item))
        return
    if tp is datetime:
        getattr(message, name).FromDatetime(value)
    elif dataclasses.is_dataclass(tp):
        getattr(message, name).CopyFrom(to_proto(value, type(getattr(message, name))))
    else:
        setattr(message, name, _scalar_out(tp, value))


def _scalar_out(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return value.value
    if tp is date:
        return value.isoformat()
    return value


def from_proto(message: Message, cls: type[T]) -> T:
    """Build dataclass cls from a message, field by field."""
    build = _BUILDERS.get(cls)
    if build is None:
        build = _BUILDERS[cls] = _builder(cls)
    return build(message)


_BUILDERS: dict[Any, Callable[[Message], Any]] = {}


def _builder(cls: Any) -> Callable[[Message], Any]:
    """The plan of cls as one function, written once per class: a plain field is read as an
    attribute, the others by their readers (a decoded event costs one call, not one a field).

    A slotted dataclass built by the __init__ dataclass wrote (_sets_slots) gets its slots set
    directly: that __init__ of a frozen class sets each field through object.__setattr__, half
    the cost of decoding an envelope (issue 17's profiles). The converted values are read first,
    so one that raises leaves no half-built instance about; the result equals cls(...)."""
    plan = _plan(cls)
    hints = _hints(cls)
    namespace: dict[str, Any] = {"cls": cls, "new": object.__new__}
    reads: list[tuple[str, str, bool]] = []  # field, how it is read, read as the attribute
    for i, (name, read) in enumerate(plan):
        if _is_plain(hints[name]) and name.isidentifier() and not keyword.iskeyword(name):
            reads.append((name, f"m.{name}", True))
        else:
            namespace[f"read_{i}"] = read
            reads.append((name, f"read_{i}(m)", False))
    if _sets_slots(cls):
        lines = [f"    v{i} = {how}" for i, (_, how, plain) in enumerate(reads) if not plain]
        lines.append("    obj = new(cls)")
        for i, (name, how, plain) in enumerate(reads):
            namespace[f"set_{i}"] = getattr(cls, name).__set__  # the slot's own descriptor
            lines.append(f"    set_{i}(obj, {how if plain else f'v{i}'})")
        lines.append("    return obj")
    else:
        lines = [f"    return cls({', '.join(f'{name}={how}' for name, how, _ in reads)})"]
    body = "\n".join(lines)
    exec(f"def build(m):\n{body}\n", namespace)  # code built from the dataclass's own fields
    build: Callable[[Message], Any] = namespace["build"]
    return build


def _sets_slots(cls: Any) -> bool:
    """True when setting cls's slots builds what calling cls does: a slotted dataclass whose
    __init__ is the one dataclass wrote (not the class's own code), every field an init field
    and a slot, and no __post_init__ to run."""
    init = cls.__init__
    return (
        not hasattr(cls, "__post_init__")
        and getattr(init, "__qualname__", "") == f"{cls.__qualname__}.__init__"
        and getattr(getattr(init, "__code__", None), "co_filename", "") == "<string>"
        and all(
            f.init and isinstance(getattr(cls, f.name, None), types.MemberDescriptorType)
            for f in dataclasses.fields(cls)
        )
    )


def _is_plain(declared: Any) -> bool:
    """True when _reader reads the field as it is (getattr, no conversion)."""
    tp, optional = _unwrap_optional(declared)
    return not (
        optional
        or typing.get_origin(tp) is tuple
        or tp is datetime
        or dataclasses.is_dataclass(tp)
        or _converter(tp) is not None
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Reader = Callable[[Message], Any]
_PLANS: dict[Any, tuple[tuple[str, Reader], ...]] = {}


# What protobuf accepts as a Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def timestamp_to_datetime(ts: Timestamp) -> datetime:
    """Timestamp.ToDatetime(tzinfo=UTC), without its generic conversions (a hot path of replay).
    Like it, refuses a timestamp out of the valid range with ValueError (so a bad record is
    poison, dead-lettered, never a crash); with nanos in 0..999,999,999, // rounds toward zero
    as protobuf does."""
    seconds, nanos = ts.seconds, ts.nanos  # each read of a field builds a new int
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS or not 0 <= nanos <= 999_999_999:
        raise ValueError(f"timestamp out of range: seconds={seconds} nanos={nanos}")
    return _EPOCH + timedelta(0, seconds, nanos // 1000)  # positional: no keyword parsing


def _plan(cls: Any) -> tuple[tuple[str, Reader], ...]:
    """One reader per field of cls, worked out once per class (decoding is on every replayed
    event's path; the type inspection is not repeated per message)."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = _hints(cls)
        plan = tuple((f.name, _reader(f.name, hints[f.name])) for f in dataclasses.fields(cls))
        _PLANS[cls] = plan
    return plan


def _reader(name: str, declared: Any) -> Reader:
    tp, optional = _unwrap_optional(declared)
    if typing.get_origin(tp) is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if dataclasses.is_dataclass(item_tp):
            return lambda m: tuple(from_proto(v, item_tp) for v in getattr(m, name))  # type: ignore[arg-type]
        item = _converter(item_tp)
        if item is None:
            return lambda m: tuple(getattr(m, name))
        return lambda m: tuple(item(v) for v in getattr(m, name))
    if tp is datetime or dataclasses.is_dataclass(tp):
        if tp is datetime:
            build: Reader = lambda m: timestamp_to_datetime(getattr(m, name))  # noqa: E731
        else:
            build = lambda m: from_proto(getattr(m, name), typing.cast(type, tp))  # noqa: E731
        if optional:
            return lambda m: build(m) if m.HasField(name) else None
        return build
    convert = _converter(tp)
    plain: Reader = (
        (lambda m: getattr(m, name)) if convert is None else (lambda m: convert(getattr(m, name)))
    )
    if optional:
        # Presence where the field has it (proto3 optional), else the empty string is None.
        def read_optional(m: Message) -> Any:
            if m.DESCRIPTOR.fields_by_name[name].has_presence:
                return plain(m) if m.HasField(name) else None
            return None if getattr(m, name) == "" else plain(m)

        return read_optional
    return plain


def _converter(tp: Any) -> Callable[[Any], Any] | None:
    """How a scalar read from a message becomes the dataclass's value (None: as it is)."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = tp._value2member_map_

        def member(value: Any) -> Any:  # tp(value) without Enum's call machinery
            found = members.get(value)
            return tp(value) if found is None else found  # an unknown value raises as tp does

        return member
    if tp is date:
        return date.fromisoformat
    return None
