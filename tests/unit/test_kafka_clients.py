"""Kafka client credentials from the environment (shared/kafka_clients.py), like libpq's PGUSER."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.kafka_clients import KafkaSecurity, KafkaSecurityError


def test_no_username_means_plaintext_and_anonymous() -> None:
    security = KafkaSecurity.from_env({})
    assert security.protocol == "PLAINTEXT"
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}
    assert security.faust_credentials() is None


def test_a_username_defaults_to_scram_sha_512_over_sasl_plaintext(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    security = KafkaSecurity.from_env(
        {"CELLBANK_KAFKA_USERNAME": "lon-storage", "CELLBANK_KAFKA_PASSWORD_FILE": str(secret)}
    )
    assert security.client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "lon-storage",
        "sasl_plain_password": "s3cret",
    }
    credentials = security.faust_credentials()
    assert credentials.username == "lon-storage" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert "s3cret" not in repr(security)  # never logged


def test_an_inline_password_wins_over_the_file() -> None:
    security = KafkaSecurity.from_env(
        {
            "CELLBANK_KAFKA_USERNAME": "operator",
            "CELLBANK_KAFKA_PASSWORD": "inline",
            "CELLBANK_KAFKA_PASSWORD_FILE": "/nonexistent",
        }
    )
    assert security.password == "inline"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CELLBANK_KAFKA_SECURITY_PROTOCOL": "SSL-ish"}, "CELLBANK_KAFKA_SECURITY_PROTOCOL"),
        (
            {
                "CELLBANK_KAFKA_USERNAME": "x",
                "CELLBANK_KAFKA_PASSWORD": "y",
                "CELLBANK_KAFKA_SASL_MECHANISM": "GSSAPI",
            },
            "CELLBANK_KAFKA_SASL_MECHANISM",
        ),
        ({"CELLBANK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "CELLBANK_KAFKA_USERNAME"),
        ({"CELLBANK_KAFKA_USERNAME": "x"}, "CELLBANK_KAFKA_PASSWORD"),
        (
            {"CELLBANK_KAFKA_USERNAME": "x", "CELLBANK_KAFKA_PASSWORD_FILE": "/nonexistent"},
            "CELLBANK_KAFKA_PASSWORD_FILE",
        ),
    ],
)
def test_unusable_settings_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(KafkaSecurityError, match=named):
        KafkaSecurity.from_env(env)
