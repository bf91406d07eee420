"""The demo realm's identities (deploy/keycloak/cellbank-realm.json) and their access tokens.

Used by `make run` (seeding, the simulator, endpoints.json), the dashboard's own reads and the
tests: `metadata("op-alice")` signs in as alice and returns the call metadata with her access
token, cached and renewed. People sign in with the password grant of the CLI client (enabled
for the demo realm only); systems with their client credentials. A person's token is renewed
well inside the signing window, so a demo step that signs never meets a stale sign-in.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TypedDict

from deploy.keycloak import REALM_FILE, Identity
from shared.oidc import Metadata, Token, request_token

PERSON_TOKEN_MAX_AGE_S = 120.0  # renew a person's token after this (signing needs ~fresh)


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    password: str
    name: str
    roles: tuple[str, ...]
    site: str = ""
    hospital: str = ""


@dataclass(frozen=True, slots=True)
class DemoClient:
    client_id: str
    secret: str
    roles: tuple[str, ...]
    site: str = ""
    hospital: str = ""


@dataclass(frozen=True, slots=True)
class DemoRealm:
    users: dict[str, DemoUser]
    clients: dict[str, DemoClient]

    def hospital_client(self, hospital: str) -> DemoClient:
        return next(c for c in self.clients.values() if c.hospital == hospital)

    def clinicians(self, hospital: str) -> list[DemoUser]:
        return [u for u in self.users.values() if u.hospital == hospital]

    def service_client(self, site: str, service: str) -> DemoClient:
        """The client of a site's service (`lon-matching`); tests' random sites use LON's."""
        wanted = f"{site.lower()}-{service.replace('_', '-')}"
        fallback = f"lon-{service.replace('_', '-')}"
        return self.clients.get(wanted) or self.clients[fallback]


@cache
def demo_realm() -> DemoRealm:
    realm = json.loads(REALM_FILE.read_text())
    secrets = {c["clientId"]: c.get("secret", "") for c in realm["clients"]}
    users: dict[str, DemoUser] = {}
    clients: dict[str, DemoClient] = {}
    for user in realm["users"]:
        groups = user.get("groups", [])
        site = next((g.split("/")[2] for g in groups if g.startswith("/sites/")), "")
        hospital = next((g.split("/")[2] for g in groups if g.startswith("/hospitals/")), "")
        roles = tuple(user.get("realmRoles", []))
        if "serviceAccountClientId" in user:
            client_id = user["serviceAccountClientId"]
            clients[client_id] = DemoClient(client_id, secrets[client_id], roles, site, hospital)
        else:
            password = next(c["value"] for c in user["credentials"] if c["type"] == "password")
            name = f"{user.get('firstName', '')} {user.get('lastName', '')}".strip()
            users[user["username"]] = DemoUser(
                user["username"], password, name, roles, site, hospital
            )
    return DemoRealm(users, clients)


# The names the demo and the tests use for who is calling (a person's username or a client id
# work too): people sign in, systems use their client.
ALIASES = {
    "op-alice": "alice",  # operator at LON (also holds QA: the two-person rule must stop her)
    "qa-alice": "alice",
    "op-bob": "bob",
    "qa-quinn": "quinn",
    "courier": "carl",
    "hosp-h1": "hospital-h1",
    "hosp-h2": "hospital-h2",
    "hosp-h3": "hospital-h3",
    "clin-h1": "h1-clara",
    "clin-h2": "h2-erin",
    "clin-h3": "h3-farid",
    "svc-matching": "lon-matching",
    "svc-delivery": "lon-delivery",
    "svc-sla": "monitor-sla",
    "svc-coldchain": "monitor-coldchain",
}


class TokenSource:
    """Access tokens of the demo realm's people and clients, cached until near expiry."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._tokens: dict[str, tuple[Token, float]] = {}
        self._lock = threading.Lock()

    def token(self, who: str) -> Token:
        name = ALIASES.get(who, who)
        realm = demo_realm()
        with self._lock:
            cached = self._tokens.get(name)
            person = name in realm.users
            if cached is not None:
                token, got_at = cached
                young = not person or time.time() - got_at < PERSON_TOKEN_MAX_AGE_S
                if token.fresh(margin=30) and young:
                    return token
            if person:
                user = realm.users[name]
                form = {
                    "grant_type": "password", "client_id": self.identity.cli_client_id,
                    "username": user.username, "password": user.password, "scope": "openid",
                }  # fmt: skip
            elif name in realm.clients:
                client = realm.clients[name]
                form = {
                    "grant_type": "client_credentials",
                    "client_id": client.client_id,
                    "client_secret": client.secret,
                }
            else:
                raise KeyError(f"{who!r} is not a person or client of the demo realm")
            token = request_token(self.identity.token_url, form)
            self._tokens[name] = (token, time.time())
            return token

    def metadata(self, who: str) -> Metadata:
        return self.token(who).metadata


_source: TokenSource | None = None


def configure(identity: Identity) -> TokenSource:
    """Where this process gets demo tokens from (set by the infrastructure that started the
    identity provider, or from endpoints.json)."""
    global _source
    if _source is None or _source.identity != identity:
        _source = TokenSource(identity)
    return _source


def source() -> TokenSource:
    if _source is None:
        raise RuntimeError(
            "no identity provider configured: start the infrastructure (deploy.infra) or "
            "call deploy.identities.configure(Identity(issuer))"
        )
    return _source


def metadata(who: str) -> Metadata:
    """Call metadata carrying `who`'s access token; an unknown name is sent as a raw bearer
    token (so tests can present forged ones)."""
    name = ALIASES.get(who, who)
    realm = demo_realm()
    if name not in realm.users and name not in realm.clients:
        return (("authorization", f"Bearer {who}"),)
    return source().metadata(who)


class Caller(Sequence[tuple[str, str]]):
    """Call metadata for `who`, resolved when a call uses it (so a module may name its caller
    before the identity provider is up); the token is the cached, renewed one."""

    def __init__(self, who: str) -> None:
        self.who = who

    def _items(self) -> Metadata:
        return metadata(self.who)

    def __getitem__(self, index: int) -> tuple[str, str]:  # type: ignore[override]
        return self._items()[index]

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items())

    def __repr__(self) -> str:
        return f"Caller({self.who!r})"


class OidcFields(TypedDict):
    oidc_issuer: str
    oidc_audience: str
    oidc_client_id: str
    oidc_client_secret: str
    oidc_sign_in_clients: frozenset[str]


def service_oidc(identity: Identity, site: str, service: str) -> OidcFields:
    """Settings fields of a site service in the demo realm: the issuer and its own client."""
    client = demo_realm().service_client(site, service)
    return {
        "oidc_issuer": identity.issuer,
        "oidc_audience": identity.audience,
        "oidc_client_id": client.client_id,
        "oidc_client_secret": client.secret,
        "oidc_sign_in_clients": frozenset({identity.cli_client_id}),
    }
