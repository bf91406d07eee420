"""Kafka client construction in one place: the platform's delivery guarantees and every
client's credentials, read from the environment like libpq reads PGUSER.

CELLBANK_KAFKA_SECURITY_PROTOCOL  PLAINTEXT | SASL_PLAINTEXT | SASL_SSL
                                  (default SASL_PLAINTEXT when a username is set, else PLAINTEXT)
CELLBANK_KAFKA_SASL_MECHANISM     default SCRAM-SHA-512
CELLBANK_KAFKA_USERNAME           the principal (User:<name>)
CELLBANK_KAFKA_PASSWORD or CELLBANK_KAFKA_PASSWORD_FILE (a file keeps it out of `ps e`)
CELLBANK_KAFKA_CA_FILE            the CA the brokers' certificates chain to (SASL_SSL)
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"


class KafkaSecurityError(ValueError):
    """The environment's Kafka security settings are unusable (names the variable)."""


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How a client authenticates to the brokers (no username: PLAINTEXT, anonymous)."""

    protocol: str = "PLAINTEXT"
    mechanism: str = DEFAULT_MECHANISM
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise KafkaSecurityError(
                f"CELLBANK_KAFKA_SECURITY_PROTOCOL: {self.protocol!r} is not one of "
                f"{', '.join(PROTOCOLS)}"
            )
        if self.protocol != "PLAINTEXT":
            if self.mechanism not in MECHANISMS:
                raise KafkaSecurityError(
                    f"CELLBANK_KAFKA_SASL_MECHANISM: {self.mechanism!r} is not one of "
                    f"{', '.join(MECHANISMS)}"
                )
            if not self.username or not self.password:
                raise KafkaSecurityError(
                    f"CELLBANK_KAFKA_USERNAME and CELLBANK_KAFKA_PASSWORD(_FILE) are required "
                    f"with {self.protocol}"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The settings in env (default os.environ); a password file wins over nothing."""
        env = os.environ if env is None else env
        username = env.get("CELLBANK_KAFKA_USERNAME", "").strip()
        password = env.get("CELLBANK_KAFKA_PASSWORD", "")
        password_file = env.get("CELLBANK_KAFKA_PASSWORD_FILE", "").strip()
        if not password and password_file:
            try:
                password = Path(password_file).read_text().strip()
            except OSError as exc:
                raise KafkaSecurityError(
                    f"CELLBANK_KAFKA_PASSWORD_FILE: cannot read {password_file}: {exc.strerror}"
                ) from None
        default_protocol = "SASL_PLAINTEXT" if username else "PLAINTEXT"
        protocol = env.get("CELLBANK_KAFKA_SECURITY_PROTOCOL", "").strip() or default_protocol
        return cls(
            protocol=protocol.upper(),
            mechanism=env.get("CELLBANK_KAFKA_SASL_MECHANISM", "").strip().upper()
            or DEFAULT_MECHANISM,
            username=username,
            password=password,
            ca_file=env.get("CELLBANK_KAFKA_CA_FILE", "").strip(),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.protocol != "SASL_SSL":
            return None
        context = ssl.create_default_context(cafile=self.ca_file or None)
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client."""
        if self.protocol == "PLAINTEXT":
            return {"security_protocol": "PLAINTEXT"}
        options: dict[str, Any] = {
            "security_protocol": self.protocol,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }
        if (context := self.ssl_context()) is not None:
            options["ssl_context"] = context
        return options

    def faust_credentials(self) -> Any:
        """faust.App(broker_credentials=…): None for PLAINTEXT."""
        if self.protocol == "PLAINTEXT":
            return None
        import faust

        return faust.SASLCredentials(
            username=self.username,
            password=self.password,
            mechanism=self.mechanism,
            ssl_context=self.ssl_context(),
        )


def _security(security: KafkaSecurity | None) -> KafkaSecurity:
    return security if security is not None else KafkaSecurity.from_env()


def producer(
    bootstrap: str, *, security: KafkaSecurity | None = None, **options: Any
) -> AIOKafkaProducer:
    """A producer with the environment's (or the given) credentials."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, **_security(security).client_options(), **options
    )


def consumer(
    *topics: str, bootstrap: str, security: KafkaSecurity | None = None, **options: Any
) -> AIOKafkaConsumer:
    """A consumer with the environment's (or the given) credentials."""
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, **_security(security).client_options(), **options
    )


def admin_client(
    bootstrap: str, *, security: KafkaSecurity | None = None, **options: Any
) -> AIOKafkaAdminClient:
    """An admin client with the environment's (or the given) credentials."""
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, **_security(security).client_options(), **options
    )


def reliable_producer(
    bootstrap: str, *, request_timeout_ms: int = 15000, security: KafkaSecurity | None = None
) -> AIOKafkaProducer:
    """acks=all + idempotence: no loss on leader change, no duplicates from internal retries."""
    return producer(
        bootstrap,
        security=security,
        acks="all",
        enable_idempotence=True,
        # No linger: the relay hands over a whole batch read from the store at once, and records
        # queue behind a request in flight anyway; waiting only added latency to every
        # cross-site hop (bench: propagation p50 25 -> 14 ms, relay throughput unchanged).
        linger_ms=0,
        max_batch_size=256 * 1024,
        request_timeout_ms=request_timeout_ms,
        retry_backoff_ms=200,
    )
