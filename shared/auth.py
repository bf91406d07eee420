"""Who is calling: OIDC access tokens (JWT) checked against the issuer's keys → a Principal.

Every call carries `authorization: Bearer <access token>` issued by the network's identity
provider (Keycloak locally; any OIDC provider in production, by configuration). A token is
accepted only with a valid signature by one of the issuer's published keys (JWKS, cached and
re-read when an unknown key id appears, so the issuer can rotate keys), the configured issuer
and audience, and a current `exp`/`nbf`. Roles come from the realm roles claim, the caller's
hospital and site from its groups (`/hospitals/H1`, `/sites/LON`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from shared.errors import PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

# Realm roles (deploy/keycloak/cellbank-realm.json; any OIDC provider must issue the same).
HOSPITAL = "hospital"  # a hospital's ordering system (client credentials)
CLINICIAN = "clinician"  # a person of a hospital: orders, signs receipt and infusion
OPERATOR = "operator"
QA = "qa"
COURIER = "courier"
SERVICE_MATCHING = "service-matching"
SERVICE_DELIVERY = "service-delivery"
SERVICE_STORAGE = "service-storage"
SERVICE_MANUFACTURING = "service-manufacturing"
SERVICE_DONOR_INTAKE = "service-donor-intake"
MONITOR_COLDCHAIN = "monitor-coldchain"
MONITOR_SLA = "monitor-sla"
ROLES = (
    HOSPITAL, CLINICIAN, OPERATOR, QA, COURIER, SERVICE_MATCHING, SERVICE_DELIVERY,
    SERVICE_STORAGE, SERVICE_MANUFACTURING, SERVICE_DONOR_INTAKE, MONITOR_COLDCHAIN, MONITOR_SLA,
)  # fmt: skip
PEOPLE_ROLES = frozenset({CLINICIAN, OPERATOR, QA, COURIER})
MAX_TOKEN_BYTES = 16_384  # a bearer token longer than this is refused before parsing


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, from its access token's claims."""

    subject: str  # `sub`: stable id of the person or client at the issuer
    username: str  # `preferred_username` (a person's login; the client's for systems)
    roles: frozenset[str]
    name: str = ""  # a person's full name (`name`); empty for systems
    client_id: str = ""  # `azp`: the client the token was issued to
    hospital: str = ""  # H1 for a hospital's system and its clinicians
    site: str = ""  # the bank site of a person or a site service
    auth_time: float | None = None  # when the person last authenticated (epoch seconds)
    token_id: str = ""  # `jti`

    @property
    def is_person(self) -> bool:
        """A human who signed in (not a client-credentials system)."""
        return bool(self.roles & PEOPLE_ROLES) and not self.username.startswith("service-account-")

    @property
    def kind(self) -> str:
        """The primary role, for logs and records ("hospital", "operator", …)."""
        for role in ROLES:
            if role in self.roles:
                return role
        return "unknown"

    @property
    def label(self) -> str:
        """Who, for an audit record: a person's username, a hospital id or a client id."""
        if self.is_person:
            return self.username
        if HOSPITAL in self.roles and self.hospital:
            return self.hospital
        return self.client_id or self.username

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def __str__(self) -> str:
        """The actor recorded on events: `operator:alice`, `hospital:H1`, a clinician with
        their hospital (`clinician:h1-clara@H1`), a site service's client id."""
        if self.is_person and self.hospital:
            return f"{self.kind}:{self.label}@{self.hospital}"
        return f"{self.kind}:{self.label}"


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "current_principal", default=None
)


def require(principal: Principal | None, *roles: str) -> Principal:
    """The caller, if it holds one of the roles; PermissionDenied otherwise."""
    if principal is None:
        raise Unauthenticated("no authenticated principal")
    if not principal.has(*roles):
        raise PermissionDenied(f"{principal} may not call this; needs one of {', '.join(roles)}")
    return principal


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The bearer token of gRPC metadata (UNAUTHENTICATED when missing or malformed)."""
    header = next((v for k, v in metadata or () if k.lower() == "authorization"), None)
    if header is None:
        raise Unauthenticated("authorization metadata is missing (expected 'Bearer <token>')")
    value = header.decode(errors="replace") if isinstance(header, bytes) else header
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization must be 'Bearer <access token>'")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthenticated(f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes")
    return token


class JwksCache:
    """The issuer's signing keys, cached; re-read when a token names an unknown key id (key
    rotation), at most once per `min_refresh` seconds, and at the latest after `max_age`."""

    def __init__(self, url: str, *, max_age: float = 600.0, min_refresh: float = 10.0) -> None:
        self.url = url
        self.max_age = max_age
        self.min_refresh = min_refresh
        self._keys: dict[str, jwt.PyJWK] = {}
        self._read_at = -1e18
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        now = time.monotonic()
        if kid not in self._keys or now - self._read_at > self.max_age:
            async with self._lock:
                stale = time.monotonic() - self._read_at > self.max_age
                if (
                    kid not in self._keys and time.monotonic() - self._read_at > self.min_refresh
                ) or stale:
                    await self._refresh()
        found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated(
                f"the token's signing key {kid[:64]!r} is not one of the issuer's"
            )
        return found

    async def _refresh(self) -> None:
        """Re-read the key set. Whatever happens, the next re-read waits `min_refresh`: a
        stream of tokens naming unknown key ids cannot make us fetch in a loop."""
        try:
            document = await asyncio.to_thread(_get_json, self.url)
            entries = document.get("keys", []) if isinstance(document, dict) else []
            keys: dict[str, jwt.PyJWK] = {}
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                kid = entry.get("kid")
                if not isinstance(kid, str) or not kid:
                    continue
                try:
                    keys[kid] = jwt.PyJWK.from_dict(entry)
                except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                    continue  # an algorithm or key this library does not take: unusable here
        except Exception as exc:  # unreachable, not JSON, not a key set
            if self._keys:
                log.warning("could not re-read the issuer's keys", extra={"error": str(exc)})
                return
            raise Unauthenticated(f"the issuer's keys ({self.url}) cannot be read: {exc}") from None
        finally:
            self._read_at = time.monotonic()
        self._keys = keys


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")


class JwtAuthenticator:
    """Maps `authorization: Bearer <JWT>` metadata to a Principal, or raises Unauthenticated."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str = "",
        leeway: float = 30.0,
        sign_in_clients: frozenset[str] = frozenset(),
    ) -> None:
        if not issuer:
            raise ValueError("an OIDC issuer is required (CELLBANK_OIDC_ISSUER)")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        self.keys = JwksCache(jwks_url or f"{self.issuer}/protocol/openid-connect/certs")
        # Clients the issuer gives no refresh tokens: each of their tokens comes from a sign-in,
        # so its `iat` is the sign-in time where the issuer leaves `auth_time` out (Keycloak
        # does for the password grant).
        self.sign_in_clients = sign_in_clients

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        token = bearer(metadata)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the bearer token is not a JWT: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"token algorithm {str(algorithm)[:20]!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the token names no signing key (kid)")
        key = await self.keys.key(kid)
        if key.algorithm_name != algorithm:  # the key decides the algorithm, not the token
            raise Unauthenticated(
                f"token algorithm {algorithm} does not match its key's ({key.algorithm_name})"
            )
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired: get a new one") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the access token is not for audience {self.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"the access token was not issued by {self.issuer}") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the access token is not valid yet (nbf/iat)") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthenticated(f"the access token is not valid: {exc}") from None
        return principal_from_claims(claims, self.sign_in_clients)


def principal_from_claims(
    claims: dict[str, Any], sign_in_clients: frozenset[str] = frozenset()
) -> Principal:
    """The caller a verified token's claims describe."""
    realm_access = claims.get("realm_access")
    raw_roles = realm_access.get("roles", []) if isinstance(realm_access, dict) else []
    roles = frozenset(r for r in raw_roles if isinstance(r, str) and r in ROLES)
    groups = [g for g in claims.get("groups", []) or [] if isinstance(g, str)]
    auth_time = claims.get("auth_time")
    if auth_time is None and claims.get("azp") in sign_in_clients:
        auth_time = claims.get("iat")
    return Principal(
        subject=str(claims.get("sub", "")),
        username=str(claims.get("preferred_username", "") or claims.get("azp", "")),
        roles=roles,
        name=str(claims.get("name", "") or ""),
        client_id=str(claims.get("azp", "") or ""),
        hospital=_group(groups, "/hospitals/"),
        site=_group(groups, "/sites/"),
        auth_time=float(auth_time) if isinstance(auth_time, int | float) else None,
        token_id=str(claims.get("jti", "") or ""),
    )


def _group(groups: list[str], prefix: str) -> str:
    return next((g[len(prefix) :] for g in groups if g.startswith(prefix)), "")


def require_recent_sign_in(principal: Principal, window_s: float, now: float | None = None) -> None:
    """Part 11 (11.200): a signature needs the person to have authenticated within the window."""
    if not principal.is_person:
        raise PermissionDenied(f"{principal} is not a person: only a signed-in person may sign")
    moment = time.time() if now is None else now
    if principal.auth_time is None or moment - principal.auth_time > window_s:
        raise Unauthenticated(
            f"signing needs a recent sign-in (within {window_s:.0f} s): sign in again, then sign"
        )


def signing_role(principal: Principal) -> str:
    """The role a signature is made in: QA when the person holds it (a QA release needs it),
    else the primary role."""
    return QA if QA in principal.roles else principal.kind
