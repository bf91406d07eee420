"""Process stop escalation and the Prometheus endpoint."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

from deploy.processes import stop_process
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
