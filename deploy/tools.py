"""Pinned command-line tools the project installs itself, under .cellbank/tools (git-ignored)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.processes import REPO_ROOT, InfraError

TOOLS_DIR = REPO_ROOT / ".cellbank" / "tools"
INSTALL_TIMEOUT_S = 900  # a cold `go install`: the module downloads and the build


@dataclass(frozen=True)
class Tool:
    """A tool at a pinned version and the command that installs it into `<home>/bin`."""

    name: str
    version: str
    install: tuple[str, ...]


def go_tool(name: str, package: str, version: str) -> Tool:
    """A tool built from its Go module by `go install package@version`."""
    return Tool(name, version, ("go", "install", f"{package}@{version}"))


KUSTOMIZE = go_tool("kustomize", "sigs.k8s.io/kustomize/kustomize/v5", "v5.8.2")


def go_environment(home: Path) -> dict[str, str]:
    """The environment of an install: Go's binaries, module cache and build cache all under
    home, so nothing lands in ~/go and `make clean` removes everything."""
    flags = os.environ.get("GOFLAGS", "")
    return os.environ | {
        "GOBIN": str(home / "bin"),
        "GOPATH": str(home / "go"),
        "GOMODCACHE": str(home / "go" / "pkg" / "mod"),
        "GOCACHE": str(home / "go" / "cache"),
        # Go makes its module cache read-only; writable, a plain `rm -rf` removes it.
        "GOFLAGS": f"{flags} -modcacherw".strip(),
    }


def ensure(tool: Tool, home: Path = TOOLS_DIR) -> Path:
    """The tool's binary, installed once (a lock keeps concurrent callers to one install)."""
    binary, stamp = home / "bin" / tool.name, home / f"{tool.name}.version"

    def installed() -> bool:
        return binary.is_file() and stamp.is_file() and stamp.read_text() == tool.version

    if installed():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{tool.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():  # another process installed it while this one waited
            return binary
        command = " ".join(tool.install)
        if shutil.which(tool.install[0]) is None:
            raise InfraError(
                f"{tool.name} {tool.version} is installed by `{command}`, and there is no "
                f"`{tool.install[0]}` on PATH: install it (Go 1.26 or newer, go.dev/doc/install)"
            )
        print(f"[cellbank] installing {tool.name} {tool.version} into {binary} (once)", flush=True)
        stamp.unlink(missing_ok=True)
        try:
            done = subprocess.run(
                tool.install,
                cwd=home,  # outside any go.mod
                env=go_environment(home),
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InfraError(f"`{command}` did not finish within {INSTALL_TIMEOUT_S}s") from None
        if done.returncode != 0 or not binary.is_file():
            raise InfraError(f"`{command}` failed:\n{done.stdout}\n{done.stderr}")
        stamp.write_text(tool.version)
    return binary


def ensure_kustomize() -> Path:
    """kustomize (pinned), which renders deploy/k8s."""
    return ensure(KUSTOMIZE)


if __name__ == "__main__":
    print(ensure_kustomize())
