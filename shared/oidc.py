"""Getting access tokens from the identity provider's token endpoint (OAuth 2.0).

Services and monitors use the client-credentials grant with their own client (one per site
service, one per monitor) for calls to other services; tokens are cached and renewed before
they expire.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import Unauthenticated

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    expires_at: float  # epoch seconds
    refresh_token: str = ""
    claims: dict[str, Any] | None = None

    def fresh(self, margin: float = 60.0, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at - margin

    @property
    def metadata(self) -> Metadata:
        return (("authorization", f"Bearer {self.access_token}"),)


def request_token(token_url: str, form: dict[str, str], timeout: float = 10.0) -> Token:
    """POST a grant to the token endpoint; Unauthenticated with the provider's words if refused."""
    return token_from_reply(token_reply(token_url, form, timeout))


def token_reply(token_url: str, form: dict[str, str], timeout: float = 10.0) -> dict[str, Any]:
    """The token endpoint's whole reply to a grant (access, refresh and ID tokens);
    Unauthenticated with the provider's words if refused or unreachable."""
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(
        token_url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            document = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read())
            why = f"{detail.get('error', '')}: {detail.get('error_description', '')}"
        except (ValueError, OSError):
            why = str(exc)
        raise Unauthenticated(f"the identity provider refused the sign-in ({why})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unauthenticated(
            f"the identity provider at {token_url} is unreachable: {exc}"
        ) from None
    if not isinstance(document, dict) or "access_token" not in document:
        raise Unauthenticated("the identity provider's reply holds no access token")
    return document


def token_from_reply(document: dict[str, Any]) -> Token:
    return Token(
        access_token=str(document["access_token"]),
        expires_at=time.time() + float(document.get("expires_in", 60)),
        refresh_token=str(document.get("refresh_token", "") or ""),
        claims=unverified_claims(str(document["access_token"])),
    )


def unverified_claims(access_token: str) -> dict[str, Any]:
    """A token's claims for the holder's own bookkeeping (expiry, auth_time): not a check."""
    import jwt

    try:
        claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
        return claims
    except jwt.PyJWTError:
        return {}


class ClientCredentials:
    """A confidential client's access token, renewed a minute before it expires."""

    def __init__(self, token_url: str, client_id: str, client_secret: str) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self._token: Token | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientCredentials:
        """CELLBANK_OIDC_CLIENT_ID / _SECRET (or _SECRET_FILE) at CELLBANK_OIDC_TOKEN_URL
        (default: the issuer's Keycloak token endpoint)."""
        from shared.settings import secret

        env = os.environ if env is None else env
        issuer = env.get("CELLBANK_OIDC_ISSUER", "").strip().rstrip("/")
        url = env.get("CELLBANK_OIDC_TOKEN_URL", "").strip() or (
            f"{issuer}/protocol/openid-connect/token" if issuer else ""
        )
        return cls(
            url, env.get("CELLBANK_OIDC_CLIENT_ID", "").strip(),
            secret(env, "CELLBANK_OIDC_CLIENT_SECRET"),
        )  # fmt: skip

    @property
    def configured(self) -> bool:
        return bool(self.token_url and self.client_id and self.client_secret)

    def token(self) -> Token:
        with self._lock:
            if self._token is None or not self._token.fresh():
                if not self.configured:
                    raise Unauthenticated(
                        "no client credentials configured "
                        "(CELLBANK_OIDC_TOKEN_URL, CELLBANK_OIDC_CLIENT_ID, CELLBANK_OIDC_CLIENT_SECRET)"
                    )
                self._token = request_token(
                    self.token_url,
                    {
                        "grant_type": "client_credentials",
                        "client_id": self.client_id,
                        "client_secret": self.client_secret,
                    },
                )
            return self._token

    def metadata(self) -> Metadata:
        """Blocking: for synchronous callers (CLI, tools)."""
        return self.token().metadata

    async def ametadata(self) -> Metadata:
        """Without blocking the event loop when a new token is needed."""
        current = self._token
        if current is not None and current.fresh():
            return current.metadata
        token = await asyncio.to_thread(self.token)
        return token.metadata
