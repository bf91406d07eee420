"""The import-linter contracts (make lint) fail when a cross-service or I/O import is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.processes import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project's Python packages and their import-linter configuration."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "migrations", "k8s", "docker")
    for package in ("services", "shared", "deploy", "protos"):
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint_imports(root: Path, contract: str) -> subprocess.CompletedProcess[str]:
    # COLUMNS: lint-imports (rich) would wrap the import chains at 80 columns.
    pythonpath = f"{root}{os.pathsep}{root / 'protos'}"
    env = {**os.environ, "PYTHONPATH": pythonpath, "COLUMNS": "200"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--contract", contract],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_service_importing_another_service_breaks_independence(tree):
    baseline = _lint_imports(tree, "services-independent")
    assert "services.storage.reorder" not in baseline.stdout
    (tree / "services/storage/reorder.py").write_text(
        '"""A deliberate violation."""\n\nimport services.matching.domain.model\n'
    )
    result = _lint_imports(tree, "services-independent")
    assert result.returncode != 0
    assert "The five services are independent" in result.stdout
    assert "services.storage is not allowed to import services.matching" in result.stdout
    assert "services.storage.reorder -> services.matching.domain.model" in result.stdout


@pytest.mark.parametrize(
    "imported",
    ["asyncpg", "socket", "cellbank.storage.v1.events_pb2", "services.storage.adapters.codec"],
)
def test_a_domain_module_importing_io_or_wire_code_breaks_domain_purity(tree, imported):
    baseline = _lint_imports(tree, "domain-pure")
    assert baseline.returncode == 0, baseline.stdout
    (tree / "services/storage/domain/wire.py").write_text(
        f'"""A deliberate violation."""\n\nimport {imported}\n'
    )
    result = _lint_imports(tree, "domain-pure")
    assert result.returncode != 0
    assert "A service's domain imports no adapters" in result.stdout
    # An installed (external) package is named by its top level: `cellbank` for the stubs.
    assert f"services.storage.domain.wire -> {imported}" in result.stdout or (
        f"services.storage.domain.wire -> {imported.split('.')[0]} " in result.stdout
    ), result.stdout


def test_shared_importing_a_service_breaks_the_platform_layer(tree):
    (tree / "shared/reorder.py").write_text(
        '"""A deliberate violation."""\n\nimport services.storage.domain.model\n'
    )
    result = _lint_imports(tree, "shared-below-services")
    assert result.returncode != 0
    assert "shared.reorder -> services.storage.domain.model" in result.stdout, result.stdout
