"""Configuration from environment variables, read once at start into a frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import InvalidArgument

_SITE = re.compile(r"^[A-Z]{3}$")
# qa: quality-assurance staff, the only ones whose e-signature releases a batch.
PRINCIPAL_KINDS = ("hospital", "operator", "qa", "service")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process of the network needs to know about where it runs."""

    site_id: str
    service: str
    kafka_bootstrap: str
    database_url: str
    grpc_port: int = 0
    metrics_port: int = 0
    tokens: Mapping[str, str] = field(default_factory=dict)
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
    # Site-to-site calls: every site's storage endpoint and this service's bearer token.
    storage_endpoints: Mapping[str, str] = field(default_factory=dict)
    service_token: str = ""
    # Matching's versioned classification table and transit table (built-ins when empty).
    classification_file: str = ""
    transit_file: str = ""
    # Matching: the IPD-IMGT/HLA release directory KIR ligands are read from ("" = none: the
    # service starts, says so loudly and scores no KIR-ligand points).
    hla_reference: str = ""
    # Matching: how long a live order's reservation holds (renewed at half-life) and how often
    # the reconciler resumes orders, returns orphaned holds and notices units taken back.
    hold_seconds: float = 24 * 3600.0
    reconcile_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, service: str = "") -> Settings:
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
            grpc_port=_port(env, "CELLBANK_GRPC_PORT"),
            metrics_port=_port(env, "CELLBANK_METRICS_PORT"),
            tokens=parse_tokens(env.get("CELLBANK_TOKENS", "")),
            log_level=env.get("CELLBANK_LOG_LEVEL", "INFO").upper(),
            grpc_host=env.get("CELLBANK_GRPC_HOST", "127.0.0.1"),
            metrics_host=env.get("CELLBANK_METRICS_HOST", "127.0.0.1"),
            database_name=env.get("CELLBANK_DATABASE_NAME", ""),
            relay_topic=env.get("CELLBANK_RELAY_TOPIC", ""),
            facility_id=env.get("CELLBANK_FACILITY_ID", ""),
            storage_endpoints=parse_endpoints(env.get("CELLBANK_STORAGE_ENDPOINTS", "")),
            service_token=env.get("CELLBANK_SERVICE_TOKEN", ""),
            classification_file=env.get("CELLBANK_CLASSIFICATION_FILE", ""),
            transit_file=env.get("CELLBANK_TRANSIT_FILE", ""),
            hla_reference=env.get("CELLBANK_HLA_REFERENCE", "").strip(),
            hold_seconds=_seconds(env, "CELLBANK_HOLD_SECONDS", 24 * 3600.0),
            reconcile_seconds=_seconds(env, "CELLBANK_RECONCILE_SECONDS", 10.0),
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


def parse_tokens(raw: str) -> dict[str, str]:
    """`token=kind:name,token2=kind:name` → {token: "kind:name"} (bearer token → principal)."""
    tokens: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        token, sep, principal = item.partition("=")
        kind, colon, name = principal.partition(":")
        if not sep or not colon or not token or not name:
            raise InvalidArgument("CELLBANK_TOKENS", f"entry {item!r} must be token=kind:name")
        if kind not in PRINCIPAL_KINDS:
            raise InvalidArgument(
                "CELLBANK_TOKENS", f"kind {kind!r} must be one of {', '.join(PRINCIPAL_KINDS)}"
            )
        tokens[token] = principal
    return tokens
