"""Operators sign in to the dashboard at the OIDC issuer: authorization code + PKCE, server-side sessions.

The browser is sent to the issuer's authorization endpoint with a random `state`, `nonce` and
an S256 code challenge; `/callback` checks the state against the one bound to this browser,
exchanges the code with the client secret and the code verifier, verifies the ID token
(signature, issuer, audience = this client, nonce) and the access token (shared.auth's
JwtAuthenticator, as every service does), and keeps the tokens in an in-memory session the
browser knows only by a random id in an HttpOnly cookie. The dashboard's gRPC reads are made
with the signed-in person's access token, renewed with the refresh token shortly before it
expires; when that fails the session ends and the person signs in again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import jwt

from deploy.keycloak import discovery
from shared.auth import ALGORITHMS, JwtAuthenticator, Principal
from shared.errors import Unauthenticated
from shared.oidc import token_reply

SESSION_COOKIE = "cellbank_session"
LOGIN_COOKIE = "cellbank_login"  # binds a pending sign-in's state to the browser that began it
LOGIN_TTL_S = 600.0
REFRESH_MARGIN_S = 30.0


@dataclass(frozen=True, slots=True)
class OidcClient:
    """The dashboard as a confidential client of the issuer."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    audience: str = "cellbank"
    jwks_url: str = ""


@dataclass(slots=True)
class Session:
    id: str
    principal: Principal
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    id_token: str = field(repr=False)
    expires_at: float  # the access token's, epoch seconds
    created_at: float
    last_seen: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.access_token}"),)


class SessionStore:
    """Sessions by id, in memory: ended after `idle_s` without a request or `lifetime_s` after
    sign-in; at most `capacity` (the oldest go first)."""

    def __init__(
        self, *, idle_s: float = 1800.0, lifetime_s: float = 8 * 3600.0, capacity: int = 10_000
    ) -> None:
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s
        self.capacity = capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)

    def get(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.time()
        if now - session.last_seen > self.idle_s or now - session.created_at > self.lifetime_s:
            self.drop(session_id)
            return None
        if touch:
            session.last_seen = now
        return session

    def drop(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)


class Login:
    """The OIDC relying party: begins and completes sign-ins, renews sessions' tokens."""

    def __init__(self, client: OidcClient, sessions: SessionStore | None = None) -> None:
        self.client = client
        self.sessions = sessions or SessionStore()
        self.authenticator = JwtAuthenticator(
            issuer=client.issuer, audience=client.audience, jwks_url=client.jwks_url
        )
        # A sign-in in progress keeps nothing here: its PKCE verifier and nonce are derived from
        # its state with this key, so no flood of started sign-ins can push out real ones.
        self._key = secrets.token_bytes(32)
        self._provider: dict[str, Any] | None = None

    async def provider(self) -> dict[str, Any]:
        """The issuer's discovery document (endpoints), read once."""
        if self._provider is None:
            document = await asyncio.to_thread(discovery, self.client.issuer, 5.0)
            if document is None:
                raise Unauthenticated(
                    f"the identity provider {self.client.issuer} cannot be reached: try again"
                )
            self._provider = dict(document)
        return self._provider

    async def begin(self, redirect_uri: str) -> tuple[str, str]:
        """(the authorization URL to send the browser to, the state to bind to it)."""
        provider = await self.provider()
        state = f"{int(time.time())}.{secrets.token_urlsafe(24)}"
        verifier = self._derived("verifier", state, redirect_uri)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": self.client.client_id,
            "redirect_uri": redirect_uri, "scope": "openid", "state": state,
            "nonce": self._derived("nonce", state, redirect_uri),
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        })  # fmt: skip
        return f"{provider['authorization_endpoint']}?{query}", state

    def _derived(self, purpose: str, state: str, redirect_uri: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\0{state}\0{redirect_uri}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()  # 43 characters

    async def complete(
        self, state: str, bound_state: str | None, code: str, redirect_uri: str
    ) -> Session:
        """The session of a sign-in the issuer sent back; Unauthenticated if anything is off
        (a code is single-use at the issuer, so a replayed callback gets nothing)."""
        if not state or not bound_state or not secrets.compare_digest(state, bound_state):
            raise Unauthenticated("this sign-in was not started by this browser: sign in again")
        started, _, _ = state.partition(".")
        if not started.isdigit() or time.time() - int(started) > LOGIN_TTL_S:
            raise Unauthenticated("this sign-in has expired: sign in again")
        if not code:
            raise Unauthenticated("the identity provider sent no authorization code")
        reply = await self._token({
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": self._derived("verifier", state, redirect_uri),
        })  # fmt: skip
        await self._check_id_token(
            str(reply.get("id_token", "")), self._derived("nonce", state, redirect_uri)
        )
        now = time.time()
        session = Session(
            id=secrets.token_urlsafe(32), principal=await self._principal(reply),
            access_token=str(reply["access_token"]),
            refresh_token=str(reply.get("refresh_token", "")),
            id_token=str(reply.get("id_token", "")),
            expires_at=now + float(reply.get("expires_in", 60)), created_at=now, last_seen=now,
        )  # fmt: skip
        self.sessions.add(session)
        return session

    async def fresh(self, session: Session) -> Session:
        """The session with an access token valid for a while yet (renewed with the refresh
        token when it is about to expire); when it cannot be renewed the session ends and
        Unauthenticated says to sign in again."""
        if time.time() < session.expires_at - REFRESH_MARGIN_S:
            return session
        async with session.lock:
            if time.time() < session.expires_at - REFRESH_MARGIN_S:
                return session
            try:
                if not session.refresh_token:
                    raise Unauthenticated("no refresh token")
                reply = await self._token(
                    {"grant_type": "refresh_token", "refresh_token": session.refresh_token}
                )
                session.principal = await self._principal(reply)
            except Unauthenticated as exc:
                self.sessions.drop(session.id)
                raise Unauthenticated(f"your sign-in has ended ({exc}): sign in again") from None
            session.access_token = str(reply["access_token"])
            session.refresh_token = str(reply.get("refresh_token", "") or session.refresh_token)
            session.id_token = str(reply.get("id_token", "") or session.id_token)
            session.expires_at = time.time() + float(reply.get("expires_in", 60))
            return session

    async def logout_url(self, session: Session | None, post_logout_uri: str) -> str:
        """Where to send the browser so the issuer ends its single sign-on session too."""
        try:
            endpoint = (await self.provider()).get("end_session_endpoint")
        except Unauthenticated:
            endpoint = None
        if not endpoint:
            return post_logout_uri
        query: dict[str, str] = {
            "client_id": self.client.client_id, "post_logout_redirect_uri": post_logout_uri,
        }  # fmt: skip
        if session is not None and session.id_token:
            query["id_token_hint"] = session.id_token
        return f"{endpoint}?{urllib.parse.urlencode(query)}"

    async def _principal(self, reply: dict[str, Any]) -> Principal:
        token = str(reply.get("access_token", ""))
        return await self.authenticator.authenticate((("authorization", f"Bearer {token}"),))

    async def _check_id_token(self, id_token: str, nonce: str) -> None:
        if not id_token:
            raise Unauthenticated("the identity provider sent no ID token")
        try:
            header = jwt.get_unverified_header(id_token)
            algorithm = header.get("alg")
            if algorithm not in ALGORITHMS:
                raise Unauthenticated(f"ID token algorithm {str(algorithm)[:20]!r} refused")
            key = await self.authenticator.keys.key(str(header.get("kid", "")))
            claims = jwt.decode(
                id_token, key=key.key, algorithms=[algorithm], audience=self.client.client_id,
                issuer=self.authenticator.issuer, leeway=self.authenticator.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the ID token is not valid: {exc}") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise Unauthenticated("the ID token's nonce is not this sign-in's")

    async def _token(self, form: dict[str, str]) -> dict[str, Any]:
        provider = await self.provider()
        body = {**form, "client_id": self.client.client_id}
        body["client_secret"] = self.client.client_secret
        return await asyncio.to_thread(token_reply, str(provider["token_endpoint"]), body)
