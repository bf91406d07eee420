"""The dashboard's configuration: the network from its environment or the local run's endpoints
file, the OIDC client from the environment (the demo client only for a local run), or it says
what is wrong. No token of its own anywhere. Its content security policy allows nothing from
elsewhere."""

from __future__ import annotations

import pytest
from starlette.types import Message, Receive, Scope, Send

from deploy.dashboard import (
    SecurityHeaders,
    config_from,
    content_security_policy,
    document_from_env,
)
from deploy.keycloak import DASHBOARD_CLIENT_ID
from shared.errors import InvalidArgument

ENV = {
    "CELLBANK_DELIVERY_ENDPOINTS": "LON=lon-delivery:50051,MAN=man-delivery:50051",
    "CELLBANK_KAFKA_BOOTSTRAP": "kafka:9092",
    "CELLBANK_OIDC_ISSUER": "https://id.example.org/realms/cellbank/",
}
CLIENT = {
    "CELLBANK_DASHBOARD_CLIENT_ID": "dashboard",
    "CELLBANK_DASHBOARD_CLIENT_SECRET": "s3cret",
    "CELLBANK_DASHBOARD_URL": "https://dashboard.example.org",
}
LOCAL = {
    "sites": {"LON": {"delivery": "127.0.0.1:50104", "storage": "127.0.0.1:50102"}},
    "kafka": "127.0.0.1:9092",
    "identity": {
        "issuer": "http://127.0.0.1:8180/realms/cellbank",
        "jwks_url": "http://127.0.0.1:8180/realms/cellbank/protocol/openid-connect/certs",
    },
}


def test_the_network_comes_from_the_environment() -> None:
    assert document_from_env(ENV) == {
        "sites": {
            "LON": {"delivery": "lon-delivery:50051"},
            "MAN": {"delivery": "man-delivery:50051"},
        },
        "kafka": "kafka:9092",
        "identity": {"issuer": "https://id.example.org/realms/cellbank"},
    }


@pytest.mark.parametrize(
    "name", ["CELLBANK_DELIVERY_ENDPOINTS", "CELLBANK_OIDC_ISSUER", "CELLBANK_KAFKA_BOOTSTRAP"]
)
def test_a_missing_setting_is_named(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        document_from_env({k: v for k, v in ENV.items() if k != name})


def test_a_malformed_endpoint_is_named_with_the_rule() -> None:
    with pytest.raises(InvalidArgument, match=r"CELLBANK_DELIVERY_ENDPOINTS.*SITE=host:port"):
        document_from_env(ENV | {"CELLBANK_DELIVERY_ENDPOINTS": "LON=nohostport"})


def test_a_container_names_its_client_and_secret() -> None:
    config = config_from(document_from_env(ENV), ENV | CLIENT, local_run=False)
    assert config.oidc.issuer == "https://id.example.org/realms/cellbank"
    assert (config.oidc.client_id, config.oidc.client_secret) == ("dashboard", "s3cret")
    assert config.sites == {"LON": "lon-delivery:50051", "MAN": "man-delivery:50051"}
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    "name", ["CELLBANK_DASHBOARD_CLIENT_ID", "CELLBANK_DASHBOARD_CLIENT_SECRET"]
)
def test_without_a_client_a_container_refuses_to_start(name: str) -> None:
    env = {k: v for k, v in (ENV | CLIENT).items() if k != name}
    with pytest.raises(ValueError, match=name):
        config_from(document_from_env(env), env, local_run=False)


def test_the_local_run_uses_the_demo_realms_dashboard_client() -> None:
    config = config_from(LOCAL, {}, local_run=True)
    assert config.oidc.issuer == "http://127.0.0.1:8180/realms/cellbank"
    assert config.oidc.client_id == DASHBOARD_CLIENT_ID
    assert config.oidc.client_secret  # from the realm file, not from the code
    assert config.oidc.jwks_url.endswith("/certs")
    assert config.sites == {"LON": "127.0.0.1:50104"}


def test_the_demo_client_is_never_offered_to_an_issuer_elsewhere() -> None:
    elsewhere = LOCAL | {"identity": {"issuer": "https://id.example.org/realms/cellbank"}}
    with pytest.raises(ValueError, match="CELLBANK_DASHBOARD_CLIENT_ID"):
        config_from(elsewhere, {}, local_run=True)


def test_an_endpoints_file_without_an_issuer_is_refused_naming_both_ways() -> None:
    with pytest.raises(ValueError, match=r"CELLBANK_OIDC_ISSUER.*identity"):
        config_from(
            {"sites": {}, "kafka": "k:9092", "operator_token": "op-alice"}, {}, local_run=True
        )


@pytest.mark.parametrize("url", ["", "http://dashboard.example.org"])
def test_a_container_needs_the_https_address_browsers_use(url: str) -> None:
    """Behind a TLS proxy the request looks like http: the Secure cookie and the sign-in's
    redirect must come from the configured https address."""
    env = ENV | CLIENT | {"CELLBANK_DASHBOARD_URL": url}
    with pytest.raises(ValueError, match="CELLBANK_DASHBOARD_URL"):
        config_from(document_from_env(env), env, local_run=False)


def test_stream_caps_are_configurable() -> None:
    env = ENV | CLIENT | {"CELLBANK_DASHBOARD_MAX_STREAMS": "3"}
    assert config_from(document_from_env(env), env, local_run=False).max_streams == 3
    with pytest.raises(ValueError, match="CELLBANK_DASHBOARD_MAX_STREAMS"):
        bad = env | {"CELLBANK_DASHBOARD_MAX_STREAMS": "0"}
        config_from(document_from_env(bad), bad, local_run=False)


async def test_every_response_allows_scripts_and_styles_from_the_dashboard_only() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    policy = content_security_policy(ENV["CELLBANK_OIDC_ISSUER"])
    await SecurityHeaders(app, policy)({"type": "http"}, None, send)  # type: ignore[arg-type]
    headers = dict(sent[0]["headers"])
    csp = headers[b"content-security-policy"].decode()
    assert "script-src 'self';" in csp and "style-src 'self';" in csp  # no inline, no CDN
    assert "default-src 'none'" in csp
    assert "form-action 'self' https://id.example.org;" in csp  # sign-out goes on to the issuer
    assert headers[b"x-content-type-options"] == b"nosniff"
