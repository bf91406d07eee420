"""Bearer tokens → principals (hospital, operator, site service)."""

from __future__ import annotations

import contextvars
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "hospital" | "operator" | "service"
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "current_principal", default=None
)


class TokenAuthenticator:
    """Maps `authorization: Bearer <token>` metadata to a Principal."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = {
            token: Principal(*principal.split(":", 1)) for token, principal in tokens.items()
        }

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        header = next((v for k, v in metadata or () if k.lower() == "authorization"), None)
        if header is None:
            raise Unauthenticated("authorization metadata is missing (expected 'Bearer <token>')")
        value = header.decode() if isinstance(header, bytes) else header
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                return principal
        raise Unauthenticated("the bearer token is not recognised")


def require(principal: Principal | None, *kinds: str) -> Principal:
    """The caller, if it is of one of the kinds; PermissionDenied otherwise."""
    if principal is None:
        raise Unauthenticated("no authenticated principal")
    if principal.kind not in kinds:
        raise PermissionDenied(f"{principal} may not call this; needs one of {', '.join(kinds)}")
    return principal
