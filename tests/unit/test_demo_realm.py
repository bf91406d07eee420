"""The demo realm file (deploy/keycloak/cellbank-realm.json): the rules the services' security
rests on, checked where they are written."""

from __future__ import annotations

import json

from deploy.keycloak import AUDIENCE, CLI_CLIENT_ID, REALM_FILE
from shared.auth import ROLES

REALM = json.loads(REALM_FILE.read_text())
CLIENTS = {c["clientId"]: c for c in REALM["clients"]}


def test_a_person_cannot_edit_their_own_name_or_manage_their_account():
    """A Part 11 signature records the name in the token: only administrators set it."""
    (provider,) = REALM["components"]["org.keycloak.userprofile.UserProfileProvider"]
    profile = json.loads(provider["config"]["kc.user.profile.config"][0])
    attributes = {a["name"]: a for a in profile["attributes"]}
    for name in ("username", "email", "firstName", "lastName"):
        assert attributes[name]["permissions"]["edit"] == ["admin"], name
    assert REALM["defaultRole"]["composite"] is False  # no account-console self-service
    assert REALM["editUsernameAllowed"] is False and REALM["registrationAllowed"] is False


def test_only_the_cli_client_takes_passwords_and_it_gets_no_refresh_tokens():
    """Its tokens' iat may stand for the sign-in time (CELLBANK_OIDC_SIGN_IN_CLIENTS)."""
    password = [c for c, rep in CLIENTS.items() if rep.get("directAccessGrantsEnabled")]
    assert password == [CLI_CLIENT_ID]
    assert CLIENTS[CLI_CLIENT_ID]["publicClient"] is True
    assert CLIENTS[CLI_CLIENT_ID]["attributes"]["use.refresh.tokens"] == "false"


def test_every_client_issues_tokens_for_the_network_with_groups_and_sign_in_time():
    for client_id, rep in CLIENTS.items():
        mappers = {m["protocolMapper"]: m["config"] for m in rep["protocolMappers"]}
        audience = mappers["oidc-audience-mapper"]["included.custom.audience"]
        assert audience == AUDIENCE, client_id
        assert mappers["oidc-group-membership-mapper"]["full.path"] == "true", client_id
        assert mappers["oidc-usersessionmodel-note-mapper"]["claim.name"] == "auth_time"


def test_roles_are_the_services_roles_and_every_account_holds_known_ones():
    assert [r["name"] for r in REALM["roles"]["realm"]] == list(ROLES)
    for user in REALM["users"]:
        assert user["realmRoles"] and set(user["realmRoles"]) <= set(ROLES), user["username"]


def test_the_demo_realm_is_for_the_local_run_only():
    """Its passwords and secrets are in this file, so locking accounts protects nothing there
    (and Keycloak locked a demo user out after quick successful sign-ins); every password and
    secret says it is a demo one."""
    assert REALM["bruteForceProtected"] is False
    for user in REALM["users"]:
        for credential in user.get("credentials", []):
            assert credential["value"].startswith("demo-")
    for client in REALM["clients"]:
        assert client.get("secret", "demo-").startswith("demo-")
