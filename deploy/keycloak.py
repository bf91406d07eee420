"""Keycloak, the network's identity provider, run from its Maven Central distribution.

Fetched once with Maven (`org.keycloak:keycloak-quarkus-dist`, unpacked into the git-ignored
cache), started in development mode on 127.0.0.1 with an in-memory database, and given the
demo realm kept in the repo (deploy/keycloak/cellbank-realm.json) at every start: identities
are configuration here, so a restart loses only sessions. Production points the services at
any OIDC provider instead (CELLBANK_OIDC_ISSUER).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.processes import (
    CACHE_DIR,
    REPO_ROOT,
    InfraError,
    free_port,
    log_tail,
    stop_process,
    wait_until,
)

KEYCLOAK_VERSION = "26.5.6"
DEPENDENCY_PLUGIN = "3.8.1"  # pinned, as for Kafka's jars
MAVEN_TIMEOUT_S = 900
REALM_FILE = REPO_ROOT / "deploy" / "keycloak" / "cellbank-realm.json"
REALM = "cellbank"
AUDIENCE = "cellbank"  # every client's tokens carry it (the realm's audience mapper)
CLI_CLIENT_ID = "cellbank-cli"  # public: device flow for people, password grant in the demo
DASHBOARD_CLIENT_ID = "cellbank-dashboard"  # confidential: authorization code + PKCE


@dataclass(frozen=True, slots=True)
class Identity:
    """Where tokens come from and how they are checked (`.cellbank/endpoints.json` "identity")."""

    issuer: str
    audience: str = AUDIENCE
    cli_client_id: str = CLI_CLIENT_ID

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    @property
    def device_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/auth/device"

    @property
    def authorization_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/auth"

    def as_json(self) -> dict[str, str]:
        return {
            "issuer": self.issuer,
            "token_url": self.token_url,
            "jwks_url": self.jwks_url,
            "cli_client_id": self.cli_client_id,
        }

    def service_env(self) -> dict[str, str]:
        """What every service process needs to validate tokens."""
        return {
            "CELLBANK_OIDC_ISSUER": self.issuer,
            "CELLBANK_OIDC_AUDIENCE": self.audience,
            "CELLBANK_OIDC_JWKS_URL": self.jwks_url,
            "CELLBANK_OIDC_TOKEN_URL": self.token_url,
            # The demo realm's CLI client gets no refresh tokens, so its tokens' iat is a
            # sign-in time (Keycloak omits auth_time for the password grant).
            "CELLBANK_OIDC_SIGN_IN_CLIENTS": self.cli_client_id,
        }


def keycloak_home(cache_dir: Path = CACHE_DIR) -> Path:
    """The unpacked server distribution, fetched once with Maven into the cache."""
    home = cache_dir / "keycloak" / f"keycloak-{KEYCLOAK_VERSION}"
    marker = cache_dir / "keycloak" / f".complete-{KEYCLOAK_VERSION}"
    if marker.exists() and (home / "bin" / "kc.sh").exists():
        return home
    if shutil.which("mvn") is None:
        raise InfraError("Maven (mvn) is required to fetch Keycloak; install it")
    print(f"[cellbank] fetching Keycloak {KEYCLOAK_VERSION} with Maven (once)", flush=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn", "-q", "-B",
        f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:unpack",
        f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:tar.gz",
        f"-DoutputDirectory={home.parent}",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=MAVEN_TIMEOUT_S,
            cwd=home.parent,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise InfraError(f"mvn did not fetch Keycloak within {MAVEN_TIMEOUT_S}s") from None
    if result.returncode != 0 or not (home / "bin" / "kc.sh").exists():
        raise InfraError(f"mvn could not fetch Keycloak:\n{result.stdout}\n{result.stderr}")
    (home / "bin" / "kc.sh").chmod(0o755)
    marker.touch()
    return home


class LocalKeycloak:
    """Owns one Keycloak process: start with the demo realm, readiness, stop."""

    def __init__(self, data_dir: Path, *, port: int | None = None, heap_mb: int = 512) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.management_port = free_port()
        self.heap_mb = heap_mb
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = data_dir / "keycloak.log"
        self.start_seconds = 0.0

    @property
    def identity(self) -> Identity:
        return Identity(f"http://127.0.0.1:{self.port}/realms/{REALM}")

    def start(self, timeout: float = 300.0) -> None:
        """Start the server and return once the realm's discovery document is served (≈35 s
        on an idle 2-core machine; a loaded one has been seen to need over 180 s)."""
        home = keycloak_home()
        imports = home / "data" / "import"
        imports.mkdir(parents=True, exist_ok=True)
        target = imports / REALM_FILE.name
        if not target.exists() or target.read_bytes() != REALM_FILE.read_bytes():
            tmp = imports / f".{REALM_FILE.name}.{os.getpid()}"
            shutil.copyfile(REALM_FILE, tmp)
            tmp.replace(target)  # atomic: a concurrent start never reads half a realm
        self.data_dir.mkdir(parents=True, exist_ok=True)
        print(f"[cellbank] starting Keycloak on 127.0.0.1:{self.port}", flush=True)
        env = {
            **os.environ,
            "JAVA_OPTS_KC_HEAP": f"-Xms128m -Xmx{self.heap_mb}m",
            "KC_LOG_FILE": str(self.log_file),
            # Names the data folder on the JVM's command line, so a later run can find and stop
            # a server whose owner died (deploy.processes.reap_abandoned).
            "JAVA_OPTS_APPEND": f"-Dcellbank.data.dir={self.data_dir}",
        }
        env.pop("JAVA_OPTS", None)
        with open(self.data_dir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(home / "bin" / "kc.sh"), "start-dev",
                    "--http-host=127.0.0.1", f"--http-port={self.port}",
                    f"--http-management-port={self.management_port}",
                    "--db=dev-mem", "--import-realm", "--health-enabled=true",
                    "--log-level=warn,org.keycloak.services:info,io.quarkus:info",
                ],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        started = time.monotonic()
        try:
            wait_until(self._ready, timeout=timeout, what=f"Keycloak on 127.0.0.1:{self.port}")
            self.start_seconds = time.monotonic() - started
            print(f"[cellbank] Keycloak ready in {self.start_seconds:.1f}s", flush=True)
        except InfraError as exc:
            self.stop()
            tail = log_tail(self.data_dir / "stdout.log")
            raise InfraError(f"{exc}\n--- Keycloak log ---\n{tail}") from None

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = log_tail(self.data_dir / "stdout.log")
            raise InfraError(f"Keycloak exited with {self.proc.returncode}\n{tail}")
        return discovery(self.identity.issuer) is not None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=timeout, name="Keycloak")
            self.proc = None


def discovery(issuer: str, timeout: float = 2.0) -> dict[str, object] | None:
    """The issuer's OpenID discovery document, or None while it is not served."""
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            document: dict[str, object] = json.loads(reply.read())
            return document
    except (urllib.error.URLError, OSError, ValueError):
        return None
