"""Configuration from environment variables, read once at start into a frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.bounds import MAX_CONCURRENT_RPCS, MAX_ENVELOPE_BYTES
from shared.chain_key import ChainKey, chain_key_from_env
from shared.errors import InvalidArgument

_SITE = re.compile(r"^[A-Z]{3}$")


# State as of a moment (shared/state_as_of.py): events between two snapshots of the states a
# service folds (CELLBANK_SNAPSHOT_EVERY_EVENTS).
SNAPSHOT_EVERY = 100_000


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process of the network needs to know about where it runs."""

    site_id: str
    service: str
    kafka_bootstrap: str
    database_url: str  # the runtime role's (least privilege: append and project)
    grpc_port: int = 0
    # The owner role's server URL: migrations run with it, then the service connects with
    # database_url. Empty: one role migrates and runs (local tools only; README, Database roles).
    migration_database_url: str = field(default="", repr=False)
    database_reader_role: str = ""  # a read-only role the migrations grant SELECT (dashboard)
    metrics_port: int = 0
    # OIDC: access tokens are checked against this issuer's keys and must name this audience.
    oidc_issuer: str = ""
    oidc_audience: str = "cellbank"
    oidc_jwks_url: str = ""  # default: Keycloak's {issuer}/protocol/openid-connect/certs
    # This service's own client (client-credentials grant) for calls to other services.
    oidc_token_url: str = ""  # default: Keycloak's {issuer}/protocol/openid-connect/token
    oidc_client_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)
    # Part 11: a signature needs the person's sign-in (`auth_time`) within this many seconds.
    signing_window_seconds: float = 300.0
    # Clients the issuer never gives refresh tokens (every token is a sign-in): their `iat`
    # stands for `auth_time` when the issuer omits it (Keycloak's password grant does).
    oidc_sign_in_clients: frozenset[str] = frozenset()
    log_level: str = "INFO"
    grpc_host: str = "127.0.0.1"
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in containers, so Prometheus can scrape
    # Overrides of the derived database (cellbank_<site>_<service>) and the service's topic.
    database_name: str = ""
    relay_topic: str = ""
    facility_id: str = ""  # ISBT 128 FIN of the site (donor intake assigns DINs from it)
    # TLS for gRPC when both are set; mTLS when a client CA is set too.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # Calls to other sites' services: trust this CA (TLS) and present this certificate (mTLS).
    tls_ca_file: str = ""
    tls_client_cert_file: str = ""
    tls_client_key_file: str = ""
    # Site-to-site calls: every site's storage endpoint.
    storage_endpoints: Mapping[str, str] = field(default_factory=dict)
    # Matching's versioned classification table and transit table (built-ins when empty).
    classification_file: str = ""
    transit_file: str = ""
    # Matching: the IPD-IMGT/HLA release directory KIR ligands are read from ("" = none: the
    # service starts, says so loudly and scores no KIR-ligand points).
    hla_reference: str = ""
    # Audit chain: the key the service's event store chains its hashes with
    # (CELLBANK_CHAIN_KEY_FILE; a service host refuses to start without it), and how often the
    # store's head is anchored, signed, on cellbank.anchors.v1 (when it moved; and on stop).
    chain_key: ChainKey | None = field(default=None, repr=False)
    anchor_interval_seconds: float = 60.0
    # Matching: how long a live order's reservation holds (renewed at half-life) and how often
    # the reconciler resumes orders, returns orphaned holds and notices units taken back.
    hold_seconds: float = 24 * 3600.0
    reconcile_seconds: float = 10.0
    # Storage: the longest a reservation may be held (`hold_until` beyond now + this is refused).
    max_hold_seconds: float = 7 * 24 * 3600.0
    # Bounds (README, "Input limits"): the largest event envelope an append accepts (below the
    # topics' max.message.bytes) and the calls one gRPC server runs at once.
    max_envelope_bytes: int = MAX_ENVELOPE_BYTES
    grpc_max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS
    # Trust between banks (shared.trust): the site's Ed25519 signing key (PEM file) and its id on
    # the trust list, which its relay signs every envelope with, and the network's trust list
    # every consumer verifies envelopes against. Required by the processes that use them.
    signing_key_file: str = ""
    signing_key_id: str = ""
    trust_list_file: str = ""
    # State as of a moment (shared/state_as_of.py): a service that folds aggregates snapshots
    # their states every this many events of its store, checking this often.
    snapshot_every_events: int = SNAPSHOT_EVERY
    snapshot_interval_seconds: float = 30.0

    @property
    def token_url(self) -> str:
        return (
            self.oidc_token_url or f"{self.oidc_issuer.rstrip('/')}/protocol/openid-connect/token"
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, service: str = "", serves_calls: bool = True
    ) -> Settings:
        """Read CELLBANK_* variables; a missing or malformed one names itself in the error."""
        env = os.environ if env is None else env
        site = env.get("CELLBANK_SITE_ID", "")
        if not _SITE.match(site):
            raise InvalidArgument("CELLBANK_SITE_ID", "must be three upper-case letters, e.g. LON")
        return cls(
            site_id=site,
            service=service or env.get("CELLBANK_SERVICE", ""),
            kafka_bootstrap=_required(env, "CELLBANK_KAFKA_BOOTSTRAP"),
            database_url=_required(env, "CELLBANK_DATABASE_URL"),
            migration_database_url=secret(env, "CELLBANK_MIGRATION_DATABASE_URL"),
            database_reader_role=env.get("CELLBANK_DATABASE_READER_ROLE", "").strip(),
            grpc_port=_port(env, "CELLBANK_GRPC_PORT"),
            metrics_port=_port(env, "CELLBANK_METRICS_PORT"),
            # A process that takes calls checks tokens against the issuer (a bare relay doesn't).
            oidc_issuer=(
                _required(env, "CELLBANK_OIDC_ISSUER")
                if serves_calls
                else env.get("CELLBANK_OIDC_ISSUER", "").strip()
            ).rstrip("/"),
            oidc_audience=env.get("CELLBANK_OIDC_AUDIENCE", "").strip() or "cellbank",
            oidc_jwks_url=env.get("CELLBANK_OIDC_JWKS_URL", "").strip(),
            oidc_token_url=env.get("CELLBANK_OIDC_TOKEN_URL", "").strip(),
            oidc_client_id=env.get("CELLBANK_OIDC_CLIENT_ID", "").strip(),
            oidc_client_secret=secret(env, "CELLBANK_OIDC_CLIENT_SECRET"),
            signing_window_seconds=_seconds(env, "CELLBANK_SIGNING_WINDOW_SECONDS", 300.0),
            oidc_sign_in_clients=frozenset(
                c.strip()
                for c in env.get("CELLBANK_OIDC_SIGN_IN_CLIENTS", "").split(",")
                if c.strip()
            ),
            log_level=env.get("CELLBANK_LOG_LEVEL", "INFO").upper(),
            grpc_host=env.get("CELLBANK_GRPC_HOST", "127.0.0.1"),
            metrics_host=env.get("CELLBANK_METRICS_HOST", "127.0.0.1"),
            database_name=env.get("CELLBANK_DATABASE_NAME", ""),
            relay_topic=env.get("CELLBANK_RELAY_TOPIC", ""),
            facility_id=env.get("CELLBANK_FACILITY_ID", ""),
            storage_endpoints=parse_endpoints(env.get("CELLBANK_STORAGE_ENDPOINTS", "")),
            classification_file=env.get("CELLBANK_CLASSIFICATION_FILE", ""),
            transit_file=env.get("CELLBANK_TRANSIT_FILE", ""),
            hla_reference=env.get("CELLBANK_HLA_REFERENCE", "").strip(),
            chain_key=chain_key_from_env(env),
            anchor_interval_seconds=_seconds(env, "CELLBANK_ANCHOR_INTERVAL_SECONDS", 60.0),
            hold_seconds=_seconds(env, "CELLBANK_HOLD_SECONDS", 24 * 3600.0),
            reconcile_seconds=_seconds(env, "CELLBANK_RECONCILE_SECONDS", 10.0),
            max_hold_seconds=_seconds(env, "CELLBANK_MAX_HOLD_SECONDS", 7 * 24 * 3600.0),
            max_envelope_bytes=_count(env, "CELLBANK_MAX_ENVELOPE_BYTES", MAX_ENVELOPE_BYTES),
            grpc_max_concurrent_rpcs=_count(
                env, "CELLBANK_GRPC_MAX_CONCURRENT_RPCS", MAX_CONCURRENT_RPCS
            ),
            signing_key_file=env.get("CELLBANK_SIGNING_KEY_FILE", "").strip(),
            signing_key_id=env.get("CELLBANK_SIGNING_KEY_ID", "").strip(),
            trust_list_file=env.get("CELLBANK_TRUST_LIST_FILE", "").strip(),
            snapshot_every_events=_count(env, "CELLBANK_SNAPSHOT_EVERY_EVENTS", SNAPSHOT_EVERY),
            snapshot_interval_seconds=_seconds(env, "CELLBANK_SNAPSHOT_INTERVAL_SECONDS", 30.0),
            **_tls(env),
        )


def _tls(env: Mapping[str, str]) -> dict[str, str]:
    cert, key = env.get("CELLBANK_TLS_CERT", ""), env.get("CELLBANK_TLS_KEY", "")
    ca = env.get("CELLBANK_TLS_CLIENT_CA", "")
    if bool(cert) != bool(key):
        raise InvalidArgument(
            "CELLBANK_TLS_CERT", "CELLBANK_TLS_CERT and CELLBANK_TLS_KEY go together"
        )
    if ca and not cert:
        raise InvalidArgument(
            "CELLBANK_TLS_CLIENT_CA", "mTLS needs CELLBANK_TLS_CERT and CELLBANK_TLS_KEY"
        )
    peer_ca = env.get("CELLBANK_TLS_CA", "")
    client_cert = env.get("CELLBANK_TLS_CLIENT_CERT", "")
    client_key = env.get("CELLBANK_TLS_CLIENT_KEY", "")
    if bool(client_cert) != bool(client_key):
        raise InvalidArgument(
            "CELLBANK_TLS_CLIENT_CERT",
            "CELLBANK_TLS_CLIENT_CERT and CELLBANK_TLS_CLIENT_KEY go together",
        )
    if client_cert and not peer_ca:
        raise InvalidArgument("CELLBANK_TLS_CA", "a client certificate needs the CA to trust")
    return {
        "tls_cert_file": cert, "tls_key_file": key, "tls_client_ca_file": ca,
        "tls_ca_file": peer_ca, "tls_client_cert_file": client_cert,
        "tls_client_key_file": client_key,
    }  # fmt: skip


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise InvalidArgument(name, "is required")
    return value


def _port(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "0")
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise InvalidArgument(name, "must be a port number 0-65535 (0 = pick a free one)")
    return int(raw)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise InvalidArgument(name, f"{raw!r} must be a positive whole number")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(name, f"{raw!r} is not a number of seconds") from None
    if not 0 < value < 10**9:
        raise InvalidArgument(name, "must be a positive number of seconds")
    return value


def parse_endpoints(raw: str, name: str = "CELLBANK_STORAGE_ENDPOINTS") -> dict[str, str]:
    """`LON=host:port,MAN=host:port` → {site: "host:port"}."""
    endpoints: dict[str, str] = {}
    for item in (i.strip() for i in raw.split(",") if i.strip()):
        site, sep, address = (x.strip() for x in item.partition("="))
        host, colon, port = address.rpartition(":")
        if not sep or not _SITE.match(site) or not colon or not host or not port.isdigit():
            raise InvalidArgument(
                name, f"entry {item!r} must be SITE=host:port, e.g. LON=127.0.0.1:50130"
            )
        endpoints[site] = address
    return endpoints


def secret(env: Mapping[str, str], name: str) -> str:
    """A secret from `NAME`, or from the file `NAME_FILE` names (a mounted Kubernetes Secret)."""
    path = env.get(f"{name}_FILE", "").strip()
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise InvalidArgument(f"{name}_FILE", f"cannot be read: {exc}") from None
    return env.get(name, "").strip()
