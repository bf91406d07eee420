"""`cellbank hla classify`: one line (or JSON object) per allele from the reference release;
invalid, unknown and retired names exit non-zero naming themselves (and the current name)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.cli import main
from deploy.processes import REPO_ROOT, hla_reference_dir

pytestmark = pytest.mark.skipif(
    not hla_reference_dir(), reason="no IPD-IMGT/HLA release (CELLBANK_HLA_REFERENCE or ../shared)"
)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["hla", "classify", *argv], out, err)
    return code, out.getvalue(), err.getvalue()


def test_json_gives_one_object_per_allele():
    code, out, err = run("--json", "C*03:07", "C*16", "A*25:01", "B*46:01")
    assert (code, err) == (0, "")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"allele": "C*03:07", "ligand": "C2", "reference": "ipd-imgt-hla-3.58.0"},
        {"allele": "C*16", "ligand": "ambiguous", "reference": "ipd-imgt-hla-3.58.0"},
        {"allele": "A*25:01", "ligand": "Bw4-80I", "reference": "ipd-imgt-hla-3.58.0"},
        {"allele": "B*46:01", "ligand": "C1", "reference": "ipd-imgt-hla-3.58.0"},
    ]


def test_plain_lines_name_allele_class_and_release():
    code, out, _ = run("A*24:04", "C*04:09N")
    assert code == 0
    assert out.splitlines() == [
        "A*24:04\tnone\tipd-imgt-hla-3.58.0",
        "C*04:09N\tnot-expressed\tipd-imgt-hla-3.58.0",
    ]


def test_bad_names_exit_nonzero_naming_each_and_the_current_name():
    code, out, err = run("A*01:34N", "XYZ", "A*99:99", "C*07:01")
    assert code == 1
    assert out == "C*07:01\tC1\tipd-imgt-hla-3.58.0\n"
    assert "A*01:34N: no longer an allele name in IPD-IMGT/HLA 3.58.0; renamed A*01:01:38L" in err
    assert "XYZ: not HLA allele nomenclature" in err
    assert "A*99:99: unknown in IPD-IMGT/HLA 3.58.0" in err


def test_a_missing_reference_directory_is_a_clear_error(tmp_path):
    code, _, err = run("--reference", str(tmp_path / "nowhere"), "C*03:07")
    assert code == 2
    assert "is not a directory" in err


def test_thousands_of_alleles_from_stdin_in_one_call():
    listed = Path(hla_reference_dir(), "Allelelist.txt").read_text().splitlines()
    names = [line.split(",")[1] for line in listed if line.startswith("HLA")][:5000]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "hla", "classify", "--json", "-"],
        input="\n".join(names), capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
        check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(names) == 5000
    assert [json.loads(line)["allele"] for line in lines] == names
    assert elapsed < 30, elapsed
