"""Least privilege: which roles may call which RPC. Every service declares its table next to
its servicer (`ACCESS`, RPC name → roles); the gRPC guard refuses a call whose method has no
entry (deny by default) or whose caller holds none of its roles, before the handler runs.
Data rules (a hospital sees only its own orders, notifications and shipments) are the
handlers' business, on top of this table."""

from __future__ import annotations

from collections.abc import Mapping

from shared.auth import (
    CLINICIAN,
    COURIER,
    HOSPITAL,
    MONITOR_COLDCHAIN,
    MONITOR_SLA,
    OPERATOR,
    QA,
    SERVICE_DELIVERY,
    SERVICE_MATCHING,
    Principal,
)
from shared.errors import PermissionDenied

Roles = frozenset[str]
AccessTable = Mapping[str, Roles]


def roles(*names: str) -> Roles:
    return frozenset(names)


STAFF = roles(OPERATOR, QA)
HOSPITAL_CALLERS = roles(HOSPITAL, CLINICIAN)  # a hospital's system or one of its clinicians
# Who acts for matching / delivery at another site, who reports, who carries.
__all__ = [
    "CLINICIAN",
    "COURIER",
    "HOSPITAL",
    "HOSPITAL_CALLERS",
    "MONITOR_COLDCHAIN",
    "MONITOR_SLA",
    "OPERATOR",
    "QA",
    "SERVICE_DELIVERY",
    "SERVICE_MATCHING",
    "STAFF",
    "AccessTable",
    "check",
    "roles",
]  # fmt: skip


def check(table: AccessTable, service: str, method: str, principal: Principal) -> None:
    """PermissionDenied unless the table lets one of the principal's roles call the method."""
    allowed = table.get(method)
    if allowed is None:
        raise PermissionDenied(f"{service}/{method} has no access rule: refused by default")
    if not principal.roles & allowed:
        raise PermissionDenied(
            f"{principal} may not call {method}; it needs one of the roles "
            f"{', '.join(sorted(allowed))}"
        )
