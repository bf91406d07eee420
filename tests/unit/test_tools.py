"""The project's pinned tools (deploy/tools.py) install once, under its own folder, or say why not."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from deploy.processes import REPO_ROOT, InfraError
from deploy.tools import (
    KUSTOMIZE,
    UPLOT,
    Tool,
    ensure,
    ensure_kustomize,
    ensure_uplot,
    go_environment,
    pinned_files,
)

# Stands in for `go install`: puts a binary into GOBIN and counts its runs in the working folder.
FAKE_INSTALL = """
import os, pathlib
binary = pathlib.Path(os.environ["GOBIN"], "fake")
binary.parent.mkdir(parents=True, exist_ok=True)
binary.write_text("#!/bin/sh\\n")
with open("installs", "a") as runs:
    runs.write("1")
"""


def fake_tool(version: str) -> Tool:
    return Tool("fake", version, (sys.executable, "-c", FAKE_INSTALL))


def installs(home: Path) -> int:
    return len((home / "installs").read_text())


def test_concurrent_callers_install_a_tool_once(tmp_path: Path) -> None:
    start = threading.Barrier(4)
    found: list[Path] = []

    def call() -> None:
        start.wait()
        found.append(ensure(fake_tool("1.0"), tmp_path))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [tmp_path / "bin" / "fake"] * 4
    assert installs(tmp_path) == 1


def test_an_installed_tool_needs_no_installer_and_a_new_version_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure(fake_tool("1.0"), tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert ensure(fake_tool("1.0"), tmp_path) == tmp_path / "bin" / "fake"
    monkeypatch.undo()
    ensure(fake_tool("2.0"), tmp_path)
    assert installs(tmp_path) == 2
    assert (tmp_path / "fake.version").read_text() == "2.0"


def test_a_missing_go_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(InfraError, match="no `go` on PATH"):
        ensure(KUSTOMIZE, tmp_path)
    assert not (tmp_path / "bin").exists()


def test_go_keeps_its_binaries_and_caches_under_the_tools_folder(tmp_path: Path) -> None:
    env = go_environment(tmp_path)
    for name in ("GOBIN", "GOPATH", "GOMODCACHE", "GOCACHE"):
        assert Path(env[name]).is_relative_to(tmp_path), name
    assert "-modcacherw" in env["GOFLAGS"].split()  # so `make clean` can remove the cache


def test_the_pinned_kustomize_is_the_one_installed() -> None:
    version = subprocess.run(
        [ensure_kustomize(), "version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert version.stdout.strip() == KUSTOMIZE.version


LIBRARY = b"window.lib = 1;\n"
# Stands in for `npm install`: writes the library's file under the prefix, counting its runs;
# like npm, it leaves a package it finds installed as it is.
FAKE_NPM = """
import pathlib, sys
target = pathlib.Path("npm/lib/dist/lib.js")
target.parent.mkdir(parents=True, exist_ok=True)
if not target.exists():
    target.write_bytes(sys.argv[1].encode())
with open("installs", "a") as runs:
    runs.write("1")
"""


def fake_library(gives: bytes, pinned: bytes = LIBRARY) -> Tool:
    digest = hashlib.sha256(pinned).hexdigest()
    return Tool(
        "lib", "1.0", (sys.executable, "-c", FAKE_NPM, gives.decode()),
        binary="npm/lib/dist/lib.js", sha256=(("npm/lib/dist/lib.js", digest),), prefix="npm/lib",
    )  # fmt: skip


def test_a_pinned_file_with_other_bytes_is_refused_and_not_marked_installed(
    tmp_path: Path,
) -> None:
    with pytest.raises(InfraError, match=r"not the pinned one: npm/lib/dist/lib\.js"):
        ensure(fake_library(b"window.lib = 'changed';\n"), tmp_path)
    assert not (tmp_path / "lib.version").exists()


def test_a_pinned_file_changed_in_the_cache_is_installed_again(tmp_path: Path) -> None:
    assert pinned_files(fake_library(LIBRARY), tmp_path) == {"lib.js": LIBRARY}
    (tmp_path / "npm/lib/dist/lib.js").write_bytes(b"tampered")
    assert pinned_files(fake_library(LIBRARY), tmp_path) == {"lib.js": LIBRARY}
    assert installs(tmp_path) == 2


def test_the_pinned_uplot_is_the_one_installed_and_served() -> None:
    files = ensure_uplot()
    assert set(files) == {"uPlot.iife.min.js", "uPlot.min.css"}
    assert f"uplot-{UPLOT.version}" in UPLOT.path(Path()).as_posix()
    assert b"uPlot" in files["uPlot.iife.min.js"]


def test_the_dashboard_image_fetches_the_pinned_uplot_as_the_tools_do() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    # the same install in the image's own tools folder, so the dashboard finds it installed
    # (and checks the pinned digests) instead of needing npm at run time
    assert f"RUN {' '.join(UPLOT.install)} \\\n    && printf {UPLOT.version} > uplot.version" in (
        dockerfile
    )
    assert "COPY --from=chart-library /app/.cellbank/tools/ .cellbank/tools/" in dockerfile
