"""`make run` with the three bank sites: a hospital client that knows only
`.cellbank/endpoints.json` and the protos searches, orders, watches its order through the
simulated courier to DELIVERED, confirms receipt and infusion; then `cellbank replay --verify`
rebuilds a site from the log with the live site's digest. Ctrl-C stops everything."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from typing import Any

import grpc
import psutil
from cellbank.hospital.v1 import hospital_pb2 as hpb
from cellbank.hospital.v1 import hospital_pb2_grpc as hpb_grpc

from deploy import cli
from deploy.processes import REPO_ROOT, free_port, free_port_block, wait_until
from shared.oidc import request_token

PATIENT = hpb.PatientProfile(
    patient_ref="PT-DEMO-7", weight_kg=70, abo="O", cmv=hpb.CMV_STATUS_POSITIVE,
    hla_alleles=["A*02:01", "A*01:01", "B*07:02", "B*08:01", "C*07:02", "C*07:01"],
)  # fmt: skip


def test_three_sites_serve_a_hospital_end_to_end_and_replay_verifies(tmp_path):
    endpoints_file = tmp_path / "endpoints.json"
    cmd = [
        sys.executable, "-m", "deploy.run", "--root", str(tmp_path / "run"),
        "--kafka-port", str(free_port()), "--postgres-port", str(free_port()),
        "--grpc-base-port", str(free_port_block(30)),
        "--metrics-base-port", str(free_port_block(30, start=25000)),
        "--dashboard-port", str(free_port()), "--endpoints-file", str(endpoints_file),
        "--donors", "1", "--simulator-interval", "0", "--courier-minutes", "0.25",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        up = time.monotonic() - started
        assert endpoints_file.exists(), "".join(lines)[-4000:]
        document = json.loads(endpoints_file.read_text())
        assert set(document["sites"]) == {"LON", "MAN", "EDI"}
        homes = {h["home_site"] for h in document["hospitals"]}
        assert len(homes) >= 2 and document["dashboard"].startswith("http://127.0.0.1:")
        hospital = document["hospitals"][0]
        order = _order_and_infuse(hospital, document["identity"])
        assert order.status == hpb.ORDER_STATUS_INFUSED
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(
            [
                "replay",
                "--site",
                hospital["home_site"],
                "--verify",
                "--endpoints",
                str(endpoints_file),
            ],
            out,
            err,
        )
        assert code == 0, out.getvalue() + err.getvalue()[-3000:]
        print(f"network up in {up:.1f}s; {out.getvalue().splitlines()[0]}")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            parent = psutil.Process(proc.pid)
            for child in [*parent.children(recursive=True), parent]:
                child.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    output = "".join(lines)
    assert proc.returncode == 0, output[-4000:]
    assert "nothing left running" in output


def _order_and_infuse(hospital: dict[str, Any], identity: dict[str, str]) -> hpb.Order:
    """What a hospital's own client does, knowing only its entry of the endpoints file and the
    issuer: its system orders with client credentials, a clinician signs in to sign."""
    auth = request_token(identity["token_url"], {
        "grant_type": "client_credentials", "client_id": hospital["client_id"],
        "client_secret": hospital["client_secret"],
    }).metadata  # fmt: skip
    clinician = hospital["clinicians"][0]
    person = request_token(identity["token_url"], {
        "grant_type": "password", "client_id": identity["cli_client_id"],
        "username": clinician["username"], "password": clinician["password"],
    }).metadata  # fmt: skip
    with grpc.insecure_channel(hospital["hospital_api"]) as channel:
        api = hpb_grpc.HospitalServiceStub(channel)
        search = hpb.SearchInventoryRequest(
            patient=PATIENT, product_type=hpb.PRODUCT_TYPE_NK, dose_cells_per_kg_min=5e6,
            dose_cells_per_kg_max=3e7,
        )  # fmt: skip
        wait_until(
            lambda: len(api.SearchInventory(search, metadata=auth, timeout=10).candidates) >= 3,
            timeout=120, what="released NK stock of the three sites",
        )  # fmt: skip
        placed = api.PlaceOrder(
            hpb.PlaceOrderRequest(
                request_id="demo-order-1", patient=PATIENT, product_type=hpb.PRODUCT_TYPE_NK,
                dose_cells_per_kg_min=5e6, dose_cells_per_kg_max=3e7,
            ),
            metadata=auth, timeout=30,
        )  # fmt: skip
        assert placed.status == hpb.ORDER_STATUS_ALLOCATED, placed.status_reason
        seen = []
        for update in api.WatchOrder(
            hpb.WatchOrderRequest(order_id=placed.order_id), metadata=auth, timeout=180
        ):
            seen.append(update.status)
            if update.status == hpb.ORDER_STATUS_DELIVERED:
                break
        assert hpb.ORDER_STATUS_DISPATCHED in seen
        sign = hpb.Signature(meaning="Received intact")  # signed by the clinician's token
        api.ConfirmReceipt(
            hpb.ConfirmReceiptRequest(order_id=placed.order_id, signature=sign),
            metadata=person,
            timeout=10,
        )
        infused: hpb.Order = api.ConfirmInfusion(
            hpb.ConfirmInfusionRequest(
                order_id=placed.order_id, unit_id=placed.units[0].unit_id,
                signature=hpb.Signature(
                    signer_name=clinician["name"], meaning="Thawed and infused"
                ),
            ),
            metadata=person, timeout=10,
        )  # fmt: skip
        return infused
