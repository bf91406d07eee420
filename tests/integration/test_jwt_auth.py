"""The access-token check itself (shared/auth.py JwtAuthenticator), against a JWKS served over
HTTP by the test: signature by a published key, issuer, audience, expiry, not-before, the
accepted algorithms (no `none`, no HMAC with the public key), and key rotation (an unknown
key id makes the authenticator re-read the issuer's keys)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import OPERATOR, QA, JwtAuthenticator, principal_from_claims
from shared.errors import Unauthenticated

ISSUER = "https://idp.test/realms/cellbank"


class Issuer:
    """Signing keys and the JWKS document an identity provider would publish."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.reads = 0

    def add_key(self, kid: str) -> rsa.RSAPrivateKey:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.keys[kid]

    def jwks(self) -> dict[str, object]:
        entries = []
        for kid, key in self.keys.items():
            entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            entries.append({**entry, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": entries}

    def token(self, kid: str, **claims: object) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER, "aud": "cellbank", "sub": "subject-1", "iat": now, "exp": now + 300,
            "preferred_username": "alice", "name": "Alice Morgan", "azp": "cellbank-cli",
            "realm_access": {"roles": ["operator", "qa", "offline_access"]},
            "groups": ["/sites/LON"], "auth_time": now - 5, **claims,
        }  # fmt: skip
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def issuer() -> Iterator[tuple[Issuer, str]]:
    state = Issuer()
    state.add_key("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.reads += 1
            body = json.dumps(state.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/certs"
    finally:
        server.shutdown()
        server.server_close()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def authenticator(jwks_url: str) -> JwtAuthenticator:
    a = JwtAuthenticator(issuer=ISSUER, audience="cellbank", jwks_url=jwks_url, leeway=5)
    a.keys.min_refresh = 0.0  # the test rotates keys at once
    return a


async def test_a_valid_token_gives_the_person_with_roles_site_and_sign_in_time(issuer):
    state, url = issuer
    principal = await authenticator(url).authenticate(bearer(state.token("k1")))
    assert principal.username == "alice" and principal.name == "Alice Morgan"
    assert principal.roles == {OPERATOR, QA}  # unknown roles are dropped
    assert principal.site == "LON" and principal.is_person
    assert principal.auth_time is not None and str(principal) == "operator:alice"


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        # Times in seconds from when the test runs, not from when the parameters were
        # collected: a long session reaches this test many minutes later.
        ({"exp": -60}, "expired"),
        ({"aud": "account"}, "audience"),
        ({"iss": "https://evil.test/realms/cellbank"}, "issued by"),
        ({"nbf": 600}, "not valid yet"),
        ({"iat": None}, "not valid"),
    ],
)
async def test_claims_that_do_not_hold_are_unauthenticated(issuer, claims, why):
    state, url = issuer
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") else v for k, v in claims.items()}
    token = state.token("k1", **{k: v for k, v in claims.items() if v is not None})
    if claims.get("iat", 0) is None:  # a token without iat
        payload = jwt.decode(token, options={"verify_signature": False})
        del payload["iat"]
        token = jwt.encode(payload, state.keys["k1"], algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(Unauthenticated, match=why):
        await authenticator(url).authenticate(bearer(token))


async def test_unsigned_hmac_confused_and_foreign_key_tokens_are_unauthenticated(issuer):
    state, url = issuer
    auth = authenticator(url)
    genuine = state.token("k1")
    header, payload, _ = genuine.split(".")
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=").decode()
    public_pem = (
        state.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = jwt.decode(genuine, options={"verify_signature": False})
    hs_header = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"k1"}').rstrip(b"=").decode()
    signing_input = f"{hs_header}.{payload}".encode()
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()  # the classic confusion
    hmac_token = f"{hs_header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, foreign, algorithm="RS256", headers={"kid": "k1"})
    for token in (f"{none_header}.{payload}.", hmac_token, forged, f"{header}.{payload}.AAAA"):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(bearer(token))


async def test_a_rotated_key_is_fetched_once_and_a_retired_one_refused(issuer):
    state, url = issuer
    auth = authenticator(url)
    await auth.authenticate(bearer(state.token("k1")))
    reads = state.reads
    await auth.authenticate(bearer(state.token("k1")))
    assert state.reads == reads  # cached
    state.add_key("k2")  # the issuer rotates: new tokens are signed with k2
    await auth.authenticate(bearer(state.token("k2")))
    assert state.reads == reads + 1
    old = state.token("k1")
    del state.keys["k1"]  # … and retires k1
    auth.keys.max_age = 0.0  # next check re-reads the keys
    with pytest.raises(Unauthenticated, match="not one of the issuer's"):
        await auth.authenticate(bearer(old))


def test_roles_hospital_and_site_come_from_the_claims_only():
    principal = principal_from_claims(
        {"sub": "s", "azp": "hospital-h1", "preferred_username": "service-account-hospital-h1",
         "realm_access": {"roles": ["hospital", "admin"]}, "groups": ["/hospitals/H1"]}
    )  # fmt: skip
    assert principal.roles == {"hospital"} and principal.hospital == "H1"
    assert not principal.is_person and str(principal) == "hospital:H1"


async def test_without_auth_time_only_a_sign_in_clients_iat_counts_as_the_sign_in(issuer):
    """Keycloak leaves auth_time out of password-grant tokens; a client that never gets refresh
    tokens signs in for every token, so its iat is the sign-in time. Any other client's token
    without auth_time has no sign-in time (and cannot sign)."""
    state, url = issuer
    auth = authenticator(url)
    auth.sign_in_clients = frozenset({"cellbank-cli"})
    token = state.token("k1", auth_time=None)
    payload = jwt.decode(token, options={"verify_signature": False})
    del payload["auth_time"]
    for azp, expected in (("cellbank-cli", payload["iat"]), ("other-app", None)):
        signed = jwt.encode({**payload, "azp": azp}, state.keys["k1"], algorithm="RS256",
                            headers={"kid": "k1"})  # fmt: skip
        assert (await auth.authenticate(bearer(signed))).auth_time == expected


async def test_a_token_naming_another_algorithm_than_its_key_is_unauthenticated(issuer):
    """The key decides the algorithm: an RSA key id with alg=ES256 is refused cleanly."""
    state, url = issuer
    _, payload, signature = state.token("k1").split(".")
    es_header = base64.urlsafe_b64encode(b'{"alg":"ES256","kid":"k1"}').rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="does not match its key"):
        await authenticator(url).authenticate(bearer(f"{es_header}.{payload}.{signature}"))


async def test_unknown_key_ids_cannot_make_the_service_fetch_keys_in_a_loop(issuer):
    state, url = issuer
    auth = JwtAuthenticator(issuer=ISSUER, audience="cellbank", jwks_url=url)  # 10 s throttle
    await auth.authenticate(bearer(state.token("k1")))
    reads = state.reads
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for i in range(20):
        claims = jwt.decode(state.token("k1"), options={"verify_signature": False})
        token = jwt.encode(claims, foreign, algorithm="RS256", headers={"kid": f"nope-{i}"})
        with pytest.raises(Unauthenticated):
            await auth.authenticate(bearer(token))
    assert state.reads <= reads + 1
