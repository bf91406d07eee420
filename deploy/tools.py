"""Pinned command-line tools the project installs itself, under .cellbank/tools (git-ignored)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from deploy.processes import REPO_ROOT, InfraError

TOOLS_DIR = REPO_ROOT / ".cellbank" / "tools"
INSTALL_TIMEOUT_S = 900  # a cold `go install`: the module downloads and the build


@dataclass(frozen=True)
class Tool:
    """A tool at a pinned version and the command (run in `home`) that installs it."""

    name: str
    version: str
    install: tuple[str, ...]
    binary: str = ""  # the executable, relative to home (default bin/<name>)
    needs: str = "Go 1.26 or newer, go.dev/doc/install"  # what the install command comes with
    # Files (relative to home) held to pinned sha256 digests: an install that gives other bytes
    # fails, and a cache whose bytes changed since is installed again.
    sha256: tuple[tuple[str, str], ...] = ()
    # The folder (relative to home) the install fills: removed before installing again over
    # pinned files that changed (npm leaves a package it finds installed as it is).
    prefix: str = ""

    def path(self, home: Path) -> Path:
        return home / (self.binary or f"bin/{self.name}")


def go_tool(name: str, package: str, version: str) -> Tool:
    """A tool built from its Go module by `go install package@version`."""
    return Tool(name, version, ("go", "install", f"{package}@{version}"))


def npm_tool(name: str, package: str, version: str) -> Tool:
    """A tool from the npm registry, installed into its own prefix under home."""
    prefix = f"npm/{name}-{version}"
    return Tool(
        name, version,
        ("npm", "install", "--prefix", prefix, "--no-save", "--no-audit", "--no-fund",
         "--ignore-scripts", "--loglevel=error", f"{package}@{version}"),
        binary=f"{prefix}/node_modules/.bin/{name}", needs="Node.js 18 or newer with npm",
        prefix=prefix,
    )  # fmt: skip


def npm_files(name: str, package: str, version: str, files: dict[str, str]) -> Tool:
    """Files of an npm package (a browser library the dashboard serves), installed like an
    npm tool and held to the pinned sha256 of each file (path inside the package → digest)."""
    tool = npm_tool(name, package, version)
    inside = f"npm/{name}-{version}/node_modules/{package}"
    pinned = tuple((f"{inside}/{path}", digest) for path, digest in files.items())
    return replace(tool, binary=pinned[0][0], sha256=pinned)


KUSTOMIZE = go_tool("kustomize", "sigs.k8s.io/kustomize/kustomize/v5", "v5.8.2")
# A newer buf may add lint rules or breaking checks: a bump is deliberate. The npm package
# carries buf's release binary in a per-platform dependency (@bufbuild/buf-linux-x64, …).
BUF = npm_tool("buf", "@bufbuild/buf", "1.75.0")
# The dashboard's charts (MIT, github.com/leeoniya/uPlot): its browser build and stylesheet, served
# by the dashboard itself (no CDN). A bump is deliberate: new digests with the new version.
UPLOT = npm_files("uplot", "uplot", "1.6.32", {
    "dist/uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "dist/uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
})  # fmt: skip


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
    binary, stamp = tool.path(home), home / f"{tool.name}.version"

    def installed() -> bool:
        return (
            binary.is_file() and stamp.is_file() and stamp.read_text() == tool.version
            and not _unpinned(tool, home)
        )  # fmt: skip

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
                f"`{tool.install[0]}` on PATH: install it ({tool.needs})"
            )
        print(
            f"[cellbank] installing {tool.name} {tool.version} into {binary} (once)",
            file=sys.stderr,
        )
        stamp.unlink(missing_ok=True)
        if tool.prefix and _unpinned(tool, home):
            shutil.rmtree(home / tool.prefix, ignore_errors=True)
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
        changed = _unpinned(tool, home)
        if changed:
            raise InfraError(
                f"`{command}` gave files whose sha256 is not the pinned one: {', '.join(changed)}"
            )
        stamp.write_text(tool.version)
    return binary


def _unpinned(tool: Tool, home: Path) -> list[str]:
    """The tool's pinned files that are missing or hold other bytes than the pinned ones."""
    return [
        path for path, digest in tool.sha256
        if not (home / path).is_file() or _sha256((home / path).read_bytes()) != digest
    ]  # fmt: skip


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pinned_files(tool: Tool, home: Path = TOOLS_DIR) -> dict[str, bytes]:
    """The tool's pinned files by file name, installed if need be; the bytes returned are the
    ones checked against the pins (InfraError if any differ)."""
    ensure(tool, home)
    files = {}
    for path, digest in tool.sha256:
        data = (home / path).read_bytes()
        if _sha256(data) != digest:
            raise InfraError(f"{home / path}: its sha256 is not the pinned {digest}")
        files[Path(path).name] = data
    return files


def ensure_kustomize() -> Path:
    """kustomize (pinned), which renders deploy/k8s."""
    return ensure(KUSTOMIZE)


def ensure_buf() -> Path:
    """buf (pinned), which lints the protos and checks them for breaking changes."""
    return ensure(BUF)


def ensure_uplot() -> dict[str, bytes]:
    """uPlot (pinned, sha256-checked): the files the dashboard serves for its charts."""
    return pinned_files(UPLOT)


if __name__ == "__main__":
    print(ensure_kustomize())
    print(ensure(UPLOT))
