"""buf breaking (make lint) catches a renamed event field and passes an unchanged contract."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.buf import against_ref, breaking, lint
from deploy.processes import REPO_ROOT

EVENTS = Path("protos/cellbank/storage/v1/events.proto")
FIELD = "  string from_address = 1;"


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(root), *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def contract_repo(tmp_path: Path) -> Path:
    """A git repo whose main holds a copy of today's buf.yaml and protos."""
    shutil.copy(REPO_ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos", ignore=_not_proto)
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "published contract")
    return tmp_path


def _not_proto(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".proto") and not Path(folder, n).is_dir()]


def _rename_field(root: Path) -> None:
    events = root / EVENTS
    text = events.read_text()
    assert FIELD in text
    events.write_text(text.replace(FIELD, "  string origin_address = 1;"))


def test_the_published_protos_pass_buf_lint():
    result = lint()
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unchanged_contract_passes_buf_breaking(contract_repo):
    _git(contract_repo, "switch", "-q", "-c", "feature")
    result = breaking(contract_repo, against="main")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renamed_event_field_fails_buf_breaking(contract_repo):
    _git(contract_repo, "switch", "-q", "-c", "feature")
    _rename_field(contract_repo)
    result = breaking(contract_repo, against="main")
    assert result.returncode != 0
    assert "from_address" in result.stdout and "UnitMoved" in result.stdout, result.stdout


def test_on_mains_tip_the_last_commit_is_checked_against_its_parent(contract_repo, monkeypatch):
    # CI clones main: against main itself the check would always pass.
    monkeypatch.delenv("CELLBANK_BUF_AGAINST", raising=False)
    _rename_field(contract_repo)
    _git(contract_repo, "commit", "-q", "-am", "rename a published field")
    assert against_ref(contract_repo) == "HEAD~1"
    result = breaking(contract_repo)
    assert result.returncode != 0
    assert "from_address" in result.stdout, result.stdout
