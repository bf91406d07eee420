"""Generic mapping between frozen domain dataclasses and protobuf messages of the same shape.

Fields map by name. Supported: str, int, float, bool, datetime (Timestamp), date (ISO string),
str-valued Enum (string), nested dataclasses (messages), tuples of those (repeated), and
`X | None` for datetime/date/dataclass fields (message presence or empty string).
No domain rules here: each service's adapters/codec.py names which class maps to which message.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import UTC, date, datetime
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
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kwargs[f.name] = _get(message, f.name, _hints(cls)[f.name])
    return cls(**kwargs)


def _get(message: Message, name: str, tp: Any) -> Any:
    tp, optional = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    value = getattr(message, name)
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if dataclasses.is_dataclass(item_tp):
            return tuple(from_proto(v, item_tp) for v in value)  # type: ignore[arg-type]
        return tuple(_scalar_in(item_tp, v) for v in value)
    if tp is datetime or dataclasses.is_dataclass(tp):
        if optional and not message.HasField(name):
            return None
        if tp is datetime:
            ts: Timestamp = value
            return ts.ToDatetime(tzinfo=UTC)
        return from_proto(value, typing.cast(type, tp))
    if optional and message.DESCRIPTOR.fields_by_name[name].has_presence:
        return _scalar_in(tp, value) if message.HasField(name) else None
    if optional and value == "":
        return None
    return _scalar_in(tp, value)


def _scalar_in(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is date:
        return date.fromisoformat(value)
    return value
