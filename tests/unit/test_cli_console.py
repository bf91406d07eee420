"""`cellbank` as installed and as it writes: the script pip made, usage errors, Rich tables and
progress on a terminal, plain stable lines anywhere else."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from deploy.cli import main
from deploy.cli.console import Streams

UNIT = "KL11026000001-S1001-01-" + "X" * 120  # wider than any terminal


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _env_without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_installed_cellbank_and_the_generated_code_work_from_any_directory(tmp_path):
    script = Path(sys.executable).parent / "cellbank"  # written by pip from [project.scripts]
    done = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, env=_env_without_pythonpath(),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cellbank hla approve" in done.stdout and "cellbank replay" in done.stdout
    imported = subprocess.run(
        [sys.executable, "-c", "import cellbank.storage.v1.events_pb2, services, shared, deploy"],
        cwd=tmp_path, env=_env_without_pythonpath(), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr


def test_a_usage_error_exits_2_naming_the_option_or_command():
    for argv, named in [
        (["audit", "log"], "--aggregate"),
        (["watch", "--limit", "many"], "--limit"),
        (["replay"], "--site"),
        (["inventory"], "inventory"),
        (["hla", "classify"], "ALLELE"),
    ]:
        out, err = io.StringIO(), io.StringIO()
        assert main(argv, out, err) == 2, argv
        assert named in err.getvalue() and not out.getvalue(), err.getvalue()


def test_a_table_off_a_terminal_is_whole_plain_lines_two_spaces_apart_under_dashes():
    out = io.StringIO()
    rows = [[UNIT, "INFUSED", "PT-1"], ["U2", "RECALLED", ""]]
    Streams(out, out).table(["UNIT", "STATUS", "PATIENT"], rows)
    width = len(UNIT)
    assert out.getvalue().splitlines() == [
        "UNIT".ljust(width) + "  STATUS    PATIENT",
        "-" * width + "  --------  -------",
        UNIT + "  INFUSED   PT-1",
        "U2".ljust(width) + "  RECALLED",
    ]


def test_a_table_on_a_terminal_is_drawn_by_rich():
    out = Terminal()
    Streams(out, out).table(["UNIT", "STATUS"], [["U1", "INFUSED"]])
    assert "\x1b[1m" in out.getvalue() and "─" in out.getvalue()  # a bold header, a rule


def test_progress_off_a_terminal_is_every_line_on_err_as_it_comes():
    out, err = io.StringIO(), io.StringIO()
    with Streams(out, err).progress() as progress:
        progress("LON storage: 3 own events restored from the log")
        progress("replaying 2 read models [##..] 1/2 events  5 ev/s  ETA 1s")
    assert err.getvalue().splitlines() == [
        "LON storage: 3 own events restored from the log",
        "replaying 2 read models [##..] 1/2 events  5 ev/s  ETA 1s",
    ]
    assert not out.getvalue()


def test_progress_on_a_terminal_keeps_each_tasks_last_line_only():
    err = Terminal()
    with Streams(io.StringIO(), err).progress() as progress:
        progress("LON storage: 3 own events restored from the log")
        for done in range(3):
            progress(f"replaying 2 read models [##..] {done}/3 events  5 ev/s  ETA 1s")
        progress("LON storage: skipped 1 untrusted record(s)")
    kept = [line.split("\r")[-1] for line in err.getvalue().split("\n")]  # what stays on screen
    assert "LON storage: 3 own events restored from the log" in kept[0]
    assert "2/3 events" in kept[1] and "LON storage: skipped 1" in kept[2]
    assert "0/3 events" not in "".join(kept)
