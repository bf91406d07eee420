"""buf (deploy/tools.py: pinned, fetched from the npm registry): proto lint and breaking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deploy.processes import REPO_ROOT, InfraError
from deploy.tools import ensure_buf

MAIN = "main"


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def against_ref(root: Path = REPO_ROOT) -> str:
    """The git ref whose protos/ the working tree must stay compatible with:
    CELLBANK_BUF_AGAINST if set (a tag, a branch, HEAD~1), else main, or main's previous
    commit when the checkout is main's tip (CI clones main: comparing it with itself is no check).
    """
    configured = os.environ.get("CELLBANK_BUF_AGAINST", "").strip()
    if configured:
        return configured
    main = _git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{MAIN}")
    if not main:
        raise InfraError(
            f"no local branch {MAIN!r} to check the protos against: set CELLBANK_BUF_AGAINST"
        )
    if main == _git(root, "rev-parse", "HEAD") and _git(root, "rev-parse", "--verify", "HEAD~1"):
        return "HEAD~1"
    return MAIN


def lint(root: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """`buf lint` of the module in root/buf.yaml."""
    return _run(root, "lint")


def breaking(
    root: Path = REPO_ROOT, against: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`buf breaking` of root's protos against protos/ at the git ref `against` of root's repo."""
    ref = against or against_ref(root)
    return _run(root, "breaking", "--against", f"{root / '.git'}#ref={ref},subdir=protos")


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ensure_buf()), *args], cwd=root, capture_output=True, text=True, check=False
    )


def main(argv: list[str]) -> int:
    if argv not in (["lint"], ["breaking"]):
        print("usage: python -m deploy.buf lint|breaking", file=sys.stderr)
        return 2
    if argv == ["lint"]:
        result = lint()
    else:
        ref = against_ref()
        print(f"buf breaking: protos/ against {ref}", file=sys.stderr)
        result = breaking(against=ref)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
