"""Translating request fields into domain values, with errors that name the field."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from google.protobuf.message import Message

from shared.auth import Principal, current_principal
from shared.commands import Meta
from shared.errors import InvalidArgument, Unauthenticated

E = TypeVar("E", bound=enum.Enum)
Clock = Callable[[], datetime]


def caller() -> Principal:
    principal = current_principal.get()
    if principal is None:
        raise Unauthenticated("no authenticated principal")
    return principal


def meta(reason: str, clock: Clock) -> Meta:
    """Who (the authenticated caller), when (server UTC) and why (required) of a command."""
    if not reason.strip():
        raise InvalidArgument("reason", "every change records why; reason must not be empty")
    return Meta(actor=str(caller()), reason=reason.strip(), at=clock())


def expected_version(request: Message) -> int | None:
    """The optional expected_version field every command request carries."""
    if not request.HasField("expected_version"):
        return None
    value: Any = getattr(request, "expected_version")  # noqa: B009 - any request message
    return int(value)


def parse_date(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(field, f"{value!r} is not a date (YYYY-MM-DD)") from None


def timestamp(request: Message, field: str) -> datetime:
    if not request.HasField(field):
        raise InvalidArgument(field, "is required")
    return moment_of(getattr(request, field), field)


def moment_of(value: Any, field: str) -> datetime:
    """A protobuf Timestamp as a UTC datetime; InvalidArgument naming the field when it lies
    outside what a datetime holds (years 1–9999)."""
    try:
        moment: datetime = value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument(field, "is not a valid moment (years 1 to 9999)") from None
    return moment


def parse_enum(kind: type[E], value: str, field: str) -> E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise InvalidArgument(field, f"{value!r} is not one of {allowed}") from None


def required(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument(field, "is required")
    return value.strip()


C = TypeVar("C")
R = TypeVar("R")
Handler = Callable[[str, C, Meta, "int | None"], Awaitable[R]]


async def dispatch(
    handle: Handler[C, R], request: Message, id_field: str, command: C, clock: Clock
) -> R:
    """The common shape of a command RPC: the aggregate named by `id_field`, the command, who
    (caller), when (server clock) and why (`reason`), and the optional expected version."""
    fields: Any = request
    return await handle(
        required(getattr(fields, id_field), id_field),
        command,
        meta(fields.reason, clock),
        expected_version(request),
    )
