"""`cellbank login` / `logout` against the real Keycloak of the test session: the password grant,
client credentials, the device authorization flow completed by a (scripted) browser, the token
cache's permissions, renewal with the refresh token, and the refusal without a sign-in."""

from __future__ import annotations

import html
import io
import json
import re
import stat
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from deploy import cli, sign_in
from deploy.identities import demo_realm
from deploy.infra import Infrastructure
from deploy.keycloak import Identity
from shared.oidc import unverified_claims


@pytest.fixture
def identity(infra: Infrastructure) -> Identity:
    return infra.endpoints.identity


@pytest.fixture
def endpoints_file(identity: Identity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An endpoints file naming the session's issuer, and a token cache of this test's own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "endpoints.json"
    path.write_text(
        json.dumps({"sites": {"LON": {"storage": "127.0.0.1:1"}}, "identity": identity.as_json()})
    )
    return path


def cellbank(*argv: str, err: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), err or io.StringIO()
    code = cli.main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def cached(identity: Identity) -> Path:
    return sign_in.token_file(identity.issuer)


def test_login_with_a_password_caches_the_tokens_for_its_owner_only(
    identity: Identity, endpoints_file: Path
):
    code, out, err = cellbank(
        "login", "--username", "alice", "--password", "demo-alice",
        "--endpoints", str(endpoints_file),
    )  # fmt: skip
    assert code == 0, err
    assert f"signed in to {identity.issuer} as alice (Alice Morgan; operator, qa; site LON)" in out
    path = cached(identity)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = cli.signed_in_token(cli.load_endpoints(endpoints_file))
    claims = unverified_claims(token)
    assert claims["preferred_username"] == "alice" and claims["iss"] == identity.issuer
    document = json.loads(path.read_text())
    # No password kept; and no refresh token: the demo realm's CLI client gets none, so each of
    # its tokens is a sign-in (services count its iat as the sign-in time).
    assert "demo-alice" not in path.read_text() and document["refresh_token"] == ""


def test_an_expired_sign_in_without_a_refresh_token_asks_to_sign_in_again(
    identity: Identity, endpoints_file: Path
):
    """The demo CLI client issues no refresh tokens: when the access token expires, every
    command says to sign in again (renewal by refresh token runs where the issuer gives one)."""
    assert cellbank("login", "--username", "bob", "--password", "demo-bob",
                    "--endpoints", str(endpoints_file))[0] == 0  # fmt: skip
    path = cached(identity)
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "expires_at": 0}))  # as if 15 minutes went by
    with pytest.raises(cli.CliError, match="run `cellbank login`"):
        cli.signed_in_token(cli.load_endpoints(endpoints_file))


def test_a_wrong_password_is_refused_and_nothing_is_kept(identity: Identity, endpoints_file: Path):
    code, out, err = cellbank(
        "login", "--username", "alice", "--password", "not-hers",
        "--endpoints", str(endpoints_file),
    )  # fmt: skip
    assert code == 2 and not out
    assert "refused the sign-in" in err and "invalid_grant" in err
    assert not cached(identity).exists()


def test_a_system_signs_in_with_its_client_credentials(
    identity: Identity, endpoints_file: Path, tmp_path: Path
):
    secret = tmp_path / "secret"
    secret.write_text(demo_realm().clients["hospital-h1"].secret + "\n")
    code, out, err = cellbank(
        "login", "--client-id", "hospital-h1", "--client-secret-file", str(secret),
        "--endpoints", str(endpoints_file),
    )  # fmt: skip
    assert code == 0, err
    assert "as hospital-h1 (hospital; hospital H1)" in out
    session = sign_in.load(cached(identity))
    assert session is not None and session.grant == "client_credentials"
    assert session.refresh_token == ""  # renewing needs the secret, which is never kept
    assert unverified_claims(session.access_token)["azp"] == "hospital-h1"


def test_logout_forgets_the_sign_in_and_commands_then_ask_for_one(
    identity: Identity, endpoints_file: Path
):
    assert cellbank("login", "--username", "quinn", "--password", "demo-quinn",
                    "--endpoints", str(endpoints_file))[0] == 0  # fmt: skip
    code, out, _ = cellbank("logout", "--endpoints", str(endpoints_file))
    assert code == 0 and "signed out quinn" in out
    assert not cached(identity).exists()
    code, out, err = cellbank("audit", "verify", "--endpoints", str(endpoints_file))
    assert code == 2 and not out
    assert "cellbank: error: not signed in: run `cellbank login`" in err


class Prompt(io.StringIO):
    """Standard error of a `cellbank login` in progress: tells the test once the code is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.shown = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "shows the code" in self.getvalue():
            self.shown.set()
        return written


def test_the_device_flow_shows_a_url_and_code_that_a_browser_completes(
    identity: Identity, endpoints_file: Path
):
    prompt = Prompt()
    result: list[tuple[int, str, str]] = []
    login = threading.Thread(
        target=lambda: result.append(
            cellbank("login", "--endpoints", str(endpoints_file), err=prompt)
        )
    )
    login.start()
    try:
        assert prompt.shown.wait(timeout=30), prompt.getvalue()
        url = re.search(r"open (\S+) in a browser", prompt.getvalue())
        code = re.search(r"shows the code (\S+)\.", prompt.getvalue())
        assert url and code, prompt.getvalue()
        assert url[1].startswith(f"{identity.issuer}/device") and code[1] in url[1]
        Browser().sign_in(url[1], "h1-clara", "demo-h1-clara")
    finally:
        login.join(timeout=60)
    ((exit_code, out, err),) = result
    assert exit_code == 0, err
    assert "as h1-clara (Clara Hughes; clinician; hospital H1)" in out
    session = sign_in.load(cached(identity))
    assert session is not None and session.grant == "device_code"
    assert unverified_claims(session.access_token)["auth_time"]  # the browser sign-in's time


class Browser:
    """Just enough of a browser for Keycloak's device verification: forms and cookies (kept by
    hand: Keycloak marks them Secure even on http://127.0.0.1, which a cookie jar honours)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    class _Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    def visit(self, url: str, form: dict[str, str] | None = None) -> str:
        opener = urllib.request.build_opener(self._Stay)
        while True:
            cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            data = urllib.parse.urlencode(form).encode() if form is not None else None
            request = urllib.request.Request(url, data=data, headers={"Cookie": cookie})
            try:
                with opener.open(request, timeout=10) as reply:
                    status, headers, body = reply.status, reply.headers, reply.read().decode()
            except urllib.error.HTTPError as exc:
                status, headers, body = exc.code, exc.headers, exc.read().decode()
            for line in headers.get_all("Set-Cookie") or []:
                name, _, value = line.split(";")[0].partition("=")
                self.cookies[name.strip()] = value
            if status in (301, 302, 303):
                url, form = urllib.parse.urljoin(url, headers["Location"]), None
                continue
            assert status == 200, f"{url}: {status}"
            return body

    def submit(self, url: str, page: str, fields: dict[str, str]) -> str:
        """Post the page's form with its hidden fields and `fields`."""
        action = re.search(r'<form[^>]*action="([^"]+)"', page)
        assert action, page[:2000]
        hidden = dict(re.findall(r'type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
        target = urllib.parse.urljoin(url, html.unescape(action[1]))
        return self.visit(target, {**hidden, **fields})

    def sign_in(self, url: str, username: str, password: str) -> None:
        page = self.visit(url)
        page = self.submit(url, page, {"username": username, "password": password})
        if "Device Login Successful" not in page:  # the consent screen: grant it
            page = self.submit(url, page, {"accept": "Yes"})
        assert "Device Login Successful" in page, page[:2000]
