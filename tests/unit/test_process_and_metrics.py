"""Process stop escalation and the Prometheus endpoint."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from deploy.processes import names_folder, stop_process
from shared import metrics

STUBBORN = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout():
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    started = time.monotonic()
    stop_process(proc, timeout=0.5, name="stubborn")
    assert proc.returncode == -9
    assert time.monotonic() - started < 10
    proc.stdout.close()


def test_metrics_endpoint_serves_platform_counters():
    port = metrics.serve_metrics(0)
    metrics.EVENTS_APPENDED.labels("LON", "storage").inc()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert 'cellbank_events_appended_total{service="storage",site="LON"}' in body
    assert "cellbank_relay_published_total" in body


@pytest.mark.parametrize(
    ("part", "named"),
    [
        ("/x/.cellbank", True),
        ("/x/.cellbank/pg", True),
        ("-Dkafka.logs.dir=/x/.cellbank/kafka/logs", True),
        ("file:/x/.cellbank/log4j.properties", True),
        ("/x/.cellbank-old/pg", False),  # a sibling whose name begins the same
        ("/x/.cellbank-old", False),
        ("/y/x/.cellbank/pg", False),  # another folder ending the same
        ("--root=/x/.cellbankish", False),
    ],
)
def test_a_server_is_reaped_only_if_an_argument_names_the_folder_or_a_path_inside(part, named):
    assert names_folder(part, Path("/x/.cellbank")) is named


REAPS_IN_A_CHILD = """
import subprocess, sys
reap = "from pathlib import Path; from deploy.processes import reap_abandoned; "
reap += f"print(reap_abandoned(Path({sys.argv[2]!r}), '.cellbank', remove=False))"
subprocess.run([sys.executable, "-c", reap], check=True)
print("alive", flush=True)
"""


def test_the_reaper_spares_its_ancestors_though_they_name_the_folder(tmp_path):
    folder = tmp_path / ".cellbank"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / "owner.pid").write_text(str(dead.pid))  # an owner gone without cleaning up
    out = subprocess.run(
        [sys.executable, "-c", REAPS_IN_A_CHILD, str(folder), str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.splitlines() == [f"[{folder!r}]", "alive"]
