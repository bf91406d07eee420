"""`cellbank login`: a person's or a system's OIDC sign-in, its tokens cached for the CLI.

People use the device authorization grant (RFC 8628: the CLI prints a URL and a code, the
person signs in with a browser, anywhere); the demo realm also allows the password grant so
scripts and tests sign in without one; automation uses its own client's credentials. The tokens
are kept per user and per issuer in `~/.cellbank/tokens/<sha256(issuer)[:16]>.json` (or
`$XDG_CONFIG_HOME/cellbank/tokens/`), the folder 0700 and the file 0600, and the access token is
renewed with the refresh token when it runs out. Client secrets and passwords are never written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.keycloak import CLI_CLIENT_ID, Identity, discovery
from shared.errors import Unauthenticated
from shared.oidc import Token, request_token, token_from_reply

ISSUER_ENV = "CELLBANK_OIDC_ISSUER"
CLI_CLIENT_ENV = "CELLBANK_OIDC_CLI_CLIENT_ID"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
NOT_SIGNED_IN = "not signed in: run `cellbank login`"
RENEW_MARGIN_S = 30.0  # renew an access token this long before it expires

Post = Callable[[str, dict[str, str]], tuple[int, dict[str, Any]]]


class SignInError(Exception):
    """A sign-in that did not happen; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Provider:
    """Where the CLI signs in: the issuer, its endpoints and the CLI's (public) client."""

    issuer: str
    token_url: str
    device_url: str
    client_id: str = CLI_CLIENT_ID
    revocation_url: str = ""

    @classmethod
    def of(cls, issuer: str, file_identity: Mapping[str, Any] | None = None) -> Provider:
        """The issuer's endpoints from its discovery document, else the endpoints file's,
        else Keycloak's paths; the CLI client from CELLBANK_OIDC_CLI_CLIENT_ID, the file,
        or `cellbank-cli`."""
        issuer = issuer.rstrip("/")
        known = dict(file_identity or {})
        if str(known.get("issuer", "")).rstrip("/") != issuer:
            known = {}
        keycloak = Identity(issuer)
        found = discovery(issuer) or {}
        client = os.environ.get(CLI_CLIENT_ENV, "").strip() or known.get("cli_client_id")
        return cls(
            issuer=issuer,
            token_url=str(
                found.get("token_endpoint") or known.get("token_url") or keycloak.token_url
            ),
            device_url=str(found.get("device_authorization_endpoint") or keycloak.device_url),
            client_id=str(client or CLI_CLIENT_ID),
            revocation_url=str(found.get("revocation_endpoint") or ""),
        )


def choose_issuer(
    explicit: str | None, file_identity: Mapping[str, Any] | None, env: Mapping[str, str]
) -> str:
    """--issuer, else $CELLBANK_OIDC_ISSUER, else the endpoints file's identity.issuer."""
    issuer = (explicit or env.get(ISSUER_ENV, "").strip()).rstrip("/")
    if not issuer and file_identity:
        issuer = str(file_identity.get("issuer", "")).rstrip("/")
    if not issuer:
        raise SignInError(
            f"no identity provider: pass --issuer URL, set {ISSUER_ENV}, or start the network "
            "with `make run` (its endpoints file names the issuer)"
        )
    return issuer


# --- the token cache -----------------------------------------------------------------------


def token_dir(env: Mapping[str, str] = os.environ) -> Path:
    config = env.get("XDG_CONFIG_HOME", "").strip()
    if config:
        return Path(config) / "cellbank" / "tokens"
    return Path.home() / ".cellbank" / "tokens"


def token_file(issuer: str, env: Mapping[str, str] = os.environ) -> Path:
    digest = hashlib.sha256(issuer.rstrip("/").encode()).hexdigest()[:16]
    return token_dir(env) / f"{digest}.json"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user's tokens at one issuer (what the cache file holds)."""

    issuer: str
    client_id: str  # the client the tokens were issued to (the refresh needs it)
    grant: str  # device_code, password or client_credentials
    who: str  # preferred_username, or the client id of a system
    access_token: str
    expires_at: float
    refresh_token: str = ""

    def fresh(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at - RENEW_MARGIN_S


def save(session: Session, path: Path) -> None:
    """Write the session readable by its owner only (0600 in a 0700 folder), atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(
            {
                "issuer": session.issuer, "client_id": session.client_id,
                "grant": session.grant, "who": session.who,
                "access_token": session.access_token, "expires_at": session.expires_at,
                "refresh_token": session.refresh_token,
            },
            out,
        )  # fmt: skip
    os.replace(partial, path)


def load(path: Path) -> Session | None:
    try:
        document = json.loads(path.read_text())
        return Session(
            str(document["issuer"]), str(document["client_id"]), str(document["grant"]),
            str(document["who"]), str(document["access_token"]), float(document["expires_at"]),
            str(document.get("refresh_token", "")),
        )  # fmt: skip
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or from another version: as good as signed out


def session_of(provider: Provider, grant: str, token: Token) -> Session:
    claims = token.claims or {}
    who = str(claims.get("preferred_username") or claims.get("azp") or "?")
    if who.startswith("service-account-"):
        who = str(claims.get("azp") or who.removeprefix("service-account-"))
    client = str(claims.get("azp") or provider.client_id)
    # A confidential client's refresh would need its secret, which is never kept: it signs in
    # again instead.
    refresh = "" if grant == "client_credentials" else token.refresh_token
    return Session(
        provider.issuer, client, grant, who, token.access_token, token.expires_at, refresh
    )


# --- the grants ----------------------------------------------------------------------------


def post_form(url: str, form: dict[str, str], timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """POST a form; (HTTP status, JSON body). Errors of the provider come back as a status."""
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": str(exc)}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SignInError(f"the identity provider at {url} is unreachable: {exc}") from None


def _granted(token_url: str, form: dict[str, str]) -> Token:
    try:
        return request_token(token_url, form)
    except Unauthenticated as exc:
        raise SignInError(str(exc)) from None


def password_login(provider: Provider, username: str, password: str) -> Session:
    """The resource-owner password grant (the demo realm's CLI client allows it)."""
    form = {
        "grant_type": "password", "client_id": provider.client_id,
        "username": username, "password": password, "scope": "openid",
    }  # fmt: skip
    return session_of(provider, "password", _granted(provider.token_url, form))


def client_login(provider: Provider, client_id: str, client_secret: str) -> Session:
    """A system signs in as its own confidential client (client-credentials grant)."""
    form = {
        "grant_type": "client_credentials", "client_id": client_id,
        "client_secret": client_secret,
    }  # fmt: skip
    return session_of(provider, "client_credentials", _granted(provider.token_url, form))


def device_login(
    provider: Provider,
    tell: Callable[[str], None],
    *,
    post: Post = post_form,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Session:
    """RFC 8628: ask for a device code, tell the person where to sign in, poll until they did
    (slowing down when asked), refused, or the code expired."""
    status, start = post(provider.device_url, {"client_id": provider.client_id, "scope": "openid"})
    if status != 200 or "device_code" not in start:
        raise SignInError(
            f"the identity provider refused a device sign-in for {provider.client_id}: "
            f"{start.get('error', status)} {start.get('error_description', '')}".rstrip()
        )
    where = start.get("verification_uri_complete") or start["verification_uri"]
    tell(f"To sign in, open {where} in a browser")
    tell(f"and check that it shows the code {start['user_code']}.")
    tell("Waiting for you to sign in…")
    interval = float(start.get("interval", 5))
    deadline = clock() + float(start.get("expires_in", 600))
    form = {"grant_type": DEVICE_GRANT, "device_code": start["device_code"]}
    form["client_id"] = provider.client_id
    while clock() < deadline:
        sleep(interval)
        status, reply = post(provider.token_url, form)
        if status == 200 and "access_token" in reply:
            return session_of(provider, "device_code", token_from_reply(reply))
        error = str(reply.get("error", status))
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5  # RFC 8628 §3.5
            continue
        if error == "access_denied":
            raise SignInError("the sign-in was declined in the browser")
        if error == "expired_token":
            break
        raise SignInError(
            f"the identity provider refused the sign-in ({error}: "
            f"{reply.get('error_description', '')})"
        )
    raise SignInError(
        "the code expired before anyone signed in with it: run `cellbank login` again"
    )


# --- using the cached sign-in --------------------------------------------------------------


def access_token(provider: Provider, env: Mapping[str, str] = os.environ) -> str:
    """The cached access token, renewed with the refresh token if it ran out;
    SignInError "not signed in: run `cellbank login`" when there is none to use."""
    path = token_file(provider.issuer, env)
    session = load(path)
    if session is None:
        raise SignInError(f"{NOT_SIGNED_IN} (no sign-in at {provider.issuer})")
    if session.fresh():
        return session.access_token
    if not session.refresh_token:
        raise SignInError(f"{NOT_SIGNED_IN} (the sign-in of {session.who} has expired)")
    form = {
        "grant_type": "refresh_token", "client_id": session.client_id,
        "refresh_token": session.refresh_token,
    }  # fmt: skip
    try:
        token = request_token(provider.token_url, form)
    except Unauthenticated as exc:
        path.unlink(missing_ok=True)  # the session is over at the issuer: so it is here
        raise SignInError(f"{NOT_SIGNED_IN} (the sign-in of {session.who} ended: {exc})") from None
    renewed = Session(
        session.issuer, session.client_id, session.grant, session.who, token.access_token,
        token.expires_at, token.refresh_token or session.refresh_token,
    )  # fmt: skip
    save(renewed, path)
    return renewed.access_token


def logout(provider: Provider, env: Mapping[str, str] = os.environ) -> Session | None:
    """Forget the cached sign-in, ending its session at the issuer where it can be revoked."""
    path = token_file(provider.issuer, env)
    session = load(path)
    if session is not None and session.refresh_token and provider.revocation_url:
        form = {"token": session.refresh_token, "token_type_hint": "refresh_token"}
        form["client_id"] = session.client_id
        try:
            post_form(provider.revocation_url, form)
        except SignInError:
            pass  # the issuer is unreachable: forgetting the tokens here is what we can do
    path.unlink(missing_ok=True)
    return session
