"""The network a command talks to: the endpoints file `make run` writes, and what it names."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy import sign_in
from deploy.cli.errors import CliError
from deploy.processes import REPO_ROOT
from shared.topics import SERVICES

DEFAULT_ENDPOINTS_FILE = REPO_ROOT / ".cellbank" / "endpoints.json"
ENDPOINTS_ENV = "CELLBANK_ENDPOINTS_FILE"


@dataclass(frozen=True, slots=True)
class NetworkEndpoints:
    """The parsed endpoints file: each site's service addresses, the identity provider, and the
    whole document (hospitals, kafka, …) for subcommands that need more."""

    path: Path
    sites: dict[str, dict[str, str]]
    identity: dict[str, str]
    document: dict[str, Any]

    def site_names(self, only: str | None = None) -> list[str]:
        """The sites to act on: `only` (checked against the file) or every site in it."""
        if only is None:
            return list(self.sites)
        site = only.strip().upper()
        if site not in self.sites:
            known = ", ".join(self.sites) or "none"
            raise CliError(f"site {only!r} is not in {self.path} (sites: {known})")
        return [site]

    def services_of(self, site: str) -> list[tuple[str, str]]:
        """(service, address) of the bank services the site has an endpoint for, in the
        network's service order; other keys (hospital_api, operator_api) are aliases."""
        entries = self.sites[site]
        return [(service, entries[service]) for service in SERVICES if service in entries]


def endpoints_path(explicit: str | Path | None, env: Mapping[str, str] = os.environ) -> Path:
    """--endpoints, else $CELLBANK_ENDPOINTS_FILE, else .cellbank/endpoints.json in the repo."""
    chosen = explicit or env.get(ENDPOINTS_ENV, "").strip() or DEFAULT_ENDPOINTS_FILE
    return Path(chosen).expanduser()


def load_endpoints(
    explicit: str | Path | None = None, env: Mapping[str, str] = os.environ
) -> NetworkEndpoints:
    """Read and check the endpoints file; CliError naming the file and the field otherwise."""
    path = endpoints_path(explicit, env)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CliError(
            f"no endpoints file at {path}: start the network with `make run` (it writes the "
            f"file), or pass --endpoints FILE / set {ENDPOINTS_ENV}"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read endpoints file {path}: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"endpoints file {path} is not JSON: {exc}") from None
    return parse_endpoints(document, path)


def parse_endpoints(document: object, path: Path) -> NetworkEndpoints:
    """The endpoints document, checked: {"sites": {SITE: {name: "host:port"}},
    "identity": {"issuer": URL, ...}, ...}."""
    if not isinstance(document, dict):
        raise CliError(f"endpoints file {path}: expected a JSON object")
    sites = document.get("sites")
    if not isinstance(sites, dict) or not sites:
        raise CliError(f"endpoints file {path}: sites: expected an object of sites")
    parsed: dict[str, dict[str, str]] = {}
    for site, entries in sites.items():
        if not isinstance(entries, dict):
            raise CliError(f"endpoints file {path}: sites.{site}: expected an object")
        for name, address in entries.items():
            if not isinstance(address, str) or not _is_address(address):
                raise CliError(
                    f"endpoints file {path}: sites.{site}.{name}: expected 'host:port', "
                    f"got {address!r}"
                )
        parsed[site.upper()] = dict(entries)
    identity = document.get("identity", {})
    if not isinstance(identity, dict) or not all(isinstance(v, str) for v in identity.values()):
        raise CliError(f"endpoints file {path}: identity: expected an object of strings")
    return NetworkEndpoints(path, parsed, identity, document)


def _is_address(value: str) -> bool:
    host, colon, port = value.rpartition(":")
    return bool(host and colon and port.isdigit())


def signed_in_token(endpoints: NetworkEndpoints, env: Mapping[str, str] = os.environ) -> str:
    """The access token of whoever signed in with `cellbank login` at the network's issuer
    ($CELLBANK_OIDC_ISSUER, else the file's identity); CliError "not signed in" otherwise."""
    try:
        issuer = sign_in.choose_issuer(None, endpoints.identity, env)
        return sign_in.access_token(sign_in.Provider.of(issuer, endpoints.identity), env)
    except sign_in.SignInError as exc:
        raise CliError(str(exc)) from None


@contextlib.contextmanager
def kafka_credentials_of(
    document: Mapping[str, Any], applies: bool, env: MutableMapping[str, str] = os.environ
) -> Iterator[None]:
    """While the command talks to the endpoints file's Kafka (applies: the bootstrap came from
    the file), its principal (make run's read-only operator) is the one shared.kafka_clients
    reads from the environment: credentials belong to the cluster they are for. Restored after."""
    given = document.get("kafka_env") or {}
    if not isinstance(given, dict):
        raise CliError('endpoints file: "kafka_env" must be an object of CELLBANK_KAFKA_* settings')
    chosen = {str(k): str(v) for k, v in given.items() if str(k).startswith("CELLBANK_KAFKA_")}
    if not applies or not chosen:
        yield
        return
    saved = {key: env.get(key) for key in chosen}
    env.update(chosen)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value


def trust_list_path(endpoints: NetworkEndpoints) -> str:
    """The network's trust list: the one the endpoints file names (the network it describes
    wrote it: make run), else CELLBANK_TRUST_LIST_FILE; reading the log verifies every record
    against it."""
    path = (
        str(endpoints.document.get("trust_list", ""))
        or os.environ.get("CELLBANK_TRUST_LIST_FILE", "").strip()
    )
    if not path:
        raise CliError(
            "reading the event log needs the network's trust list: set CELLBANK_TRUST_LIST_FILE"
            " or use the endpoints file make run writes"
        )
    return path
