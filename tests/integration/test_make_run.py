"""`make run` starts the infrastructure, reports it, and stops everything on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import asyncpg
import grpc
import psutil
import pytest
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.hospital.v1 import hospital_pb2_grpc as hpb_grpc

from deploy import cli
from deploy.infra import Endpoints
from deploy.network import SERVICE_MODULES
from deploy.processes import REPO_ROOT, free_port, free_port_block, wait_until
from shared.oidc import request_token


async def _service_sessions(server: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(server)
    try:
        rows = await conn.fetch(
            "SELECT application_name, usename FROM pg_stat_activity"
            " WHERE application_name LIKE 'cellbank-service %'"
        )
    finally:
        await conn.close()
    return {(r["application_name"], r["usename"]) for r in rows}


@pytest.fixture
def run_root() -> Iterator[Path]:
    """A data folder for `make run` under .cellbank/ (not the shared /tmp/pytest-of-*, whose
    permissions a concurrent pytest resets, shutting PostgreSQL's service user out)."""
    root = REPO_ROOT / ".cellbank" / f"test-make-run-{uuid.uuid4().hex[:8]}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _make_run(root: Path, endpoints_file: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "deploy.run", "--root", str(root), "--sites", "LON",
        "--endpoints-file", str(endpoints_file),
        "--kafka-port", str(free_port()), "--postgres-port", str(free_port()),
        "--grpc-base-port", str(free_port_block(10)),
        "--metrics-base-port", str(free_port_block(10, start=25000)), *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def _running(
    cmd: list[str], env: Mapping[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`make run` until it says "press Ctrl-C" (its output so far in the list); whatever is
    left running when the block ends is killed."""
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends when the process closes stdout; bounded by its own timeouts
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        assert "press Ctrl-C" in "".join(lines), f"make run did not come up:\n{''.join(lines)}"
        yield proc, lines
    finally:
        if proc.poll() is None:
            parent = psutil.Process(proc.pid)
            for child in [*parent.children(recursive=True), parent]:  # servers have own sessions
                child.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _ctrl_c(proc: subprocess.Popen[str], lines: list[str]) -> None:
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    lines.append(rest)


def test_make_run_starts_and_stops_cleanly_on_ctrl_c(tmp_path, monkeypatch, run_root):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the CLI's sign-ins
    with _running(_make_run(run_root, tmp_path / "endpoints.json")) as (proc, lines):
        expected = (
            "kafka.Kafka", "coldchain_worker", "tank_simulator", "sla_worker",
            *SERVICE_MODULES.values(),
        )  # fmt: skip

        def running() -> list[str]:
            return [
                " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)
            ]

        # The last children may still be between fork and exec: wait for them, with a deadline.
        wait_until(
            lambda: all(any(e in c for c in running()) for e in expected),
            timeout=30,
            what=f"every process of the network ({', '.join(expected)})",
        )
        order = _order_from_the_demo_stock("".join(lines), tmp_path / "endpoints.json")
        audit = _audit_of_the_demo_batch(tmp_path / "endpoints.json", "".join(lines))
        sessions = asyncio.run(
            _service_sessions(json.loads((tmp_path / "endpoints.json").read_text())["database_url"])
        )
        # Every service runs as the runtime role (and holds its lock, which names it).
        assert sessions == {
            (f"cellbank-service LON {s}", "cellbank_runtime") for s in SERVICE_MODULES
        }
        children = psutil.Process(proc.pid).children(recursive=True)
        _ctrl_c(proc, lines)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "(5 site/service databases)" in output
    assert (
        "LON donor_intake" in output and "LON manufacturing" in output and "LON storage" in output
    )
    assert "stored in LON-T1" in output
    assert "released into" in output  # the demo donor went all the way to units
    assert "nothing left running" in output
    assert order.status == hpb.ORDER_STATUS_ALLOCATED, order.status_reason
    assert order.units[0].site_id == "LON"
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert str(audit["verify"]).splitlines()[-1] == "OK"
    assert "signed by Quinn Adeyemi at " in str(audit["log"])  # the person, from the token
    assert '"Released for clinical use"' in str(audit["log"])
    assert audit["home_sites"] == {"LON"}  # one site: every demo hospital is at home there
    assert not (tmp_path / "endpoints.json").exists()  # removed once nothing is reachable


def test_make_run_again_on_the_same_data_resumes_and_serves_orders(
    tmp_path: Path, run_root: Path, endpoints: Endpoints
) -> None:
    """Run, stop, run again on the same data: the second run finds the demo stock the first
    one stored (it seeds nothing into filled positions) and a hospital orders from it. Kafka
    and PostgreSQL are the runs' own (their data is what restarts); the identity provider is
    the session's, which holds the demo realm (a Keycloak start per run buys nothing here)."""
    env = {**os.environ, "CELLBANK_OIDC_ISSUER": endpoints.identity.issuer}
    cmd = _make_run(run_root, tmp_path / "endpoints.json", "--no-simulator")  # same ports twice
    first = subprocess.run(
        [*cmd, "--exit-when-ready"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "stored in LON-T1" in first.stdout
    with _running(cmd, env) as (proc, lines):
        assert "network is up" in "".join(lines)
        order = _order_from_the_demo_stock("".join(lines), tmp_path / "endpoints.json")
        _ctrl_c(proc, lines)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "LON: 2 units in LON-T1 from an earlier run, nothing to seed" in output
    assert "Traceback" not in output
    assert order.status == hpb.ORDER_STATUS_ALLOCATED, order.status_reason
    assert "nothing left running" in output


def _audit_of_the_demo_batch(endpoints_file: Path, output: str) -> dict[str, object]:
    """`cellbank` finds the network through the file `make run` wrote, with no other flags."""
    document = json.loads(endpoints_file.read_text())
    batch_id = output.split("demo data  LON: batch ")[1].split()[0]
    results: dict[str, object] = {"home_sites": {h["home_site"] for h in document["hospitals"]}}
    operator = next(u for u in document["users"] if "operator" in u["roles"])
    login = ["login", "--username", operator["username"], "--password", operator["password"]]
    for name, argv in (
        ("login", login),
        ("verify", ["audit", "verify", "--site", "LON"]),
        ("log", ["audit", "log", "--aggregate", batch_id]),
    ):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main([*argv, "--endpoints", str(endpoints_file)], out, err)
        assert code == 0, err.getvalue()
        results[name] = out.getvalue()
    return results


def _order_from_the_demo_stock(output: str, endpoints_file: Path) -> hpb.Order:
    """A hospital client with only the printed endpoint and its client credentials orders an
    NK unit."""
    (line,) = [x for x in output.splitlines() if "LON matching" in x]
    address = line.split("grpc ")[1].split()[0]
    document = json.loads(endpoints_file.read_text())
    hospital = document["hospitals"][0]
    auth = request_token(document["identity"]["token_url"], {
        "grant_type": "client_credentials", "client_id": hospital["client_id"],
        "client_secret": hospital["client_secret"],
    }).metadata  # fmt: skip
    patient = hpb.PatientProfile(
        patient_ref="PT-DEMO", weight_kg=70, abo="O", cmv=hpb.CMV_STATUS_POSITIVE,
        hla_alleles=["A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01"],
    )  # fmt: skip
    search = hpb.SearchInventoryRequest(
        patient=patient, product_type=hpb.PRODUCT_TYPE_NK, dose_cells_per_kg_min=5e6,
        dose_cells_per_kg_max=3e7,
    )  # fmt: skip
    with grpc.insecure_channel(address) as channel:
        stub = hpb_grpc.HospitalServiceStub(channel)
        wait_until(
            lambda: len(stub.SearchInventory(search, metadata=auth, timeout=5).candidates) > 0,
            timeout=60,
            what="the demo units in LON's network inventory",
        )
        order = hpb.PlaceOrderRequest(
            request_id="demo-1", patient=patient, product_type=hpb.PRODUCT_TYPE_NK,
            dose_cells_per_kg_min=5e6, dose_cells_per_kg_max=3e7,
        )  # fmt: skip
        placed: hpb.Order = stub.PlaceOrder(order, metadata=auth, timeout=30)
        return placed
