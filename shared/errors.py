"""Typed errors the domain and the stores raise; the gRPC layer maps each to one status."""

from __future__ import annotations


class CellBankError(Exception):
    """Base of every error that is meant to reach a caller with a clear message."""


class InvalidArgument(CellBankError):
    """A field is malformed; the message names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(CellBankError):
    """The addressed aggregate or record does not exist."""


class PreconditionFailed(CellBankError):
    """A domain rule refused the command; the message says which rule."""

    def __init__(self, rule: str, detail: str = "") -> None:
        super().__init__(f"{rule}: {detail}" if detail else rule)
        self.rule = rule


class ConcurrencyConflict(CellBankError):
    """The aggregate moved on since the caller read it: expected version is stale."""

    def __init__(self, aggregate_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"aggregate {aggregate_id}: expected version {expected}, current version {actual}"
        )
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual


class Unauthenticated(CellBankError):
    """No valid credentials were presented."""


class PermissionDenied(CellBankError):
    """The principal is known but may not do this."""


class StoreBusy(CellBankError):
    """The event store could not take its append lock in time; retry the command."""


class ResourceExhausted(CellBankError):
    """The caller holds as much of a bounded resource as it may (e.g. open streams)."""
