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


# The one error contract of a site-to-site port (e.g. matching and delivery calling a unit's
# owning site): adapters translate their transport's failures into these two, so a service
# layer never sees gRPC.
class SiteRefused(PreconditionFailed):
    """The other site decided: it refused the call (its rule, a stale version, an unknown
    unit). Calling again will not change its mind; the caller tries another way."""

    def __init__(self, site_id: str, why: str) -> None:
        super().__init__(f"site {site_id} refused", why)
        self.site_id = site_id
        self.why = why


class UnknownAtSite(SiteRefused):
    """The other site answered that it does not know the addressed record (e.g. a unit it never
    stored): the one refusal that says something about the record's whereabouts."""


class SiteUnavailable(CellBankError):
    """The other site could not be asked (unreachable, timed out, no endpoint configured, no
    access token): nothing is known of its decision; the caller may retry later."""

    def __init__(self, site_id: str, why: str) -> None:
        super().__init__(f"site {site_id} unavailable: {why}")
        self.site_id = site_id
        self.why = why
