"""The demo realm, as Keycloak serves it: what the services rely on in its tokens (the realm
file's own rules are checked in tests/unit/test_demo_realm.py)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

from deploy.identities import demo_realm
from deploy.infra import Endpoints
from shared.oidc import request_token, unverified_claims


def password_token(endpoints: Endpoints, username: str) -> dict[str, object]:
    body = urllib.parse.urlencode({
        "grant_type": "password", "client_id": endpoints.identity.cli_client_id,
        "username": username, "password": demo_realm().users[username].password,
        "scope": "openid",
    }).encode()  # fmt: skip
    with urllib.request.urlopen(endpoints.identity.token_url, data=body, timeout=10) as reply:
        document: dict[str, object] = json.loads(reply.read())
    return document


def test_a_clinicians_token_names_the_person_their_hospital_and_no_refresh(endpoints):
    reply = password_token(endpoints, "h1-clara")
    claims = unverified_claims(str(reply["access_token"]))
    assert claims["name"] == "Clara Hughes" and claims["preferred_username"] == "h1-clara"
    assert claims["aud"] == "cellbank" and claims["azp"] == "cellbank-cli"
    assert claims["realm_access"]["roles"] == ["clinician"]
    assert claims["groups"] == ["/hospitals/H1"]
    # Every token of the CLI client is a sign-in (its iat stands for auth_time): no refresh.
    assert "refresh_token" not in reply


def test_a_hospital_system_token_carries_its_role_and_hospital(endpoints):
    client = demo_realm().clients["hospital-h2"]
    token = request_token(endpoints.identity.token_url, {
        "grant_type": "client_credentials", "client_id": client.client_id,
        "client_secret": client.secret,
    })  # fmt: skip
    assert token.claims is not None
    assert token.claims["realm_access"]["roles"] == ["hospital"]
    assert token.claims["groups"] == ["/hospitals/H2"] and "name" not in token.claims
