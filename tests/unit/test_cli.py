"""`cellbank` without a network: the endpoints file (as `make run` writes it and as the CLI reads
it), the report lines, signature extraction, and the commands' listing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cellbank.operator.v1 import operator_service_pb2 as opb
from google.protobuf.timestamp_pb2 import Timestamp

from deploy.cli import (
    ChainCheck,
    CliError,
    Signature,
    broken_link,
    check_line,
    history_lines,
    history_records,
    load_endpoints,
    main,
    parse_endpoints,
    resolve_token,
    signatures,
)
from deploy.demo import TOKENS
from deploy.network import plan
from deploy.run import endpoints_document, write_endpoints_file
from shared.topics import SERVICES

REPO = Path(__file__).resolve().parents[2]


def test_make_run_writes_every_site_service_hospital_and_the_operator_token(tmp_path):
    sites = ["LON", "MAN", "EDI"]
    services = plan(sites, 50100, 9300)
    path = tmp_path / "endpoints.json"
    write_endpoints_file(path, endpoints_document(services, sites, "127.0.0.1:9092"))
    document = json.loads(path.read_text())
    assert set(document) == {
        "sites", "hospitals", "operator_token", "kafka", "database_url", "dashboard"
    }  # fmt: skip
    assert document["kafka"] == "127.0.0.1:9092"
    assert TOKENS[document["operator_token"]].startswith("operator:")
    assert list(document["sites"]) == sites
    lon = document["sites"]["LON"]
    assert lon["donor_intake"] == "127.0.0.1:50100" and lon["storage"] == "127.0.0.1:50102"
    assert lon["hospital_api"] == lon["matching"] and lon["operator_api"] == lon["storage"]
    for site, entries in document["sites"].items():
        assert {s.service for s in services if s.site == site} <= set(entries)
    hospital_tokens = [t for t, p in TOKENS.items() if p.startswith("hospital:")]
    assert [h["token"] for h in document["hospitals"]] == hospital_tokens
    assert [(h["id"], h["home_site"]) for h in document["hospitals"]] == [
        ("H1", "LON"),
        ("H2", "MAN"),
        ("H3", "EDI"),
    ]
    for hospital in document["hospitals"]:
        assert hospital["hospital_api"] == document["sites"][hospital["home_site"]]["matching"]
    assert not list(tmp_path.glob(".*partial"))  # written by rename: never seen half-written
    endpoints = load_endpoints(path, env={})  # and the CLI reads exactly what make run writes
    assert [s for s, _ in endpoints.services_of("MAN")] == [s for s in SERVICES if s in lon]
    assert endpoints.operator_token == document["operator_token"]


def test_a_missing_endpoints_file_says_to_start_the_network_or_pass_one(tmp_path):
    with pytest.raises(CliError, match=r"make run.*--endpoints"):
        load_endpoints(tmp_path / "absent.json", env={})
    env = {"CELLBANK_ENDPOINTS_FILE": str(tmp_path / "from-env.json")}
    with pytest.raises(CliError, match=r"from-env\.json"):
        load_endpoints(None, env=env)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "expected a JSON object"),
        ({"sites": {}}, "sites:"),
        ({"sites": {"LON": "x"}}, "sites.LON:"),
        ({"sites": {"LON": {"storage": "nowhere"}}}, "sites.LON.storage:"),
        ({"sites": {"LON": {"storage": "h:1"}}, "operator_token": 7}, "operator_token:"),
    ],
)
def test_a_malformed_endpoints_file_names_the_field(document, field):
    with pytest.raises(CliError, match=field):
        parse_endpoints(document, Path("e.json"))


def test_the_token_comes_from_the_flag_then_the_environment_then_the_file():
    endpoints = parse_endpoints(
        {"sites": {"lon": {"storage": "h:1"}}, "operator_token": "op-file"}, Path("e.json")
    )
    assert endpoints.site_names() == ["LON"] and endpoints.site_names("lon") == ["LON"]
    assert resolve_token("op-flag", endpoints, env={"CELLBANK_TOKEN": "op-env"}) == "op-flag"
    assert resolve_token(None, endpoints, env={"CELLBANK_TOKEN": "op-env"}) == "op-env"
    assert resolve_token(None, endpoints, env={}) == "op-file"
    with pytest.raises(CliError, match=r"'EDI' is not in e.json \(sites: LON\)"):
        endpoints.site_names("EDI")


def test_report_lines_name_the_site_service_and_the_broken_event():
    intact = ChainCheck(
        "LON", "storage", "h:1", opb.AuditChainReport(intact=True, events_checked=1234)
    )
    assert check_line(intact).split() == ["LON", "storage", "OK", "1234", "events"]
    report = opb.AuditChainReport(
        intact=False, events_checked=16, broken_at_position=17, problem="hash does not match",
        broken_event_id="0199-e", broken_aggregate_id="B-1", broken_aggregate_version=4,
        broken_event_type="cellbank.manufacturing.v1.BatchReleased",
    )  # fmt: skip
    broken = ChainCheck("LON", "manufacturing", "h:2", report)
    assert "BROKEN  at position 17" in check_line(broken)
    assert broken_link(broken) == (
        "BROKEN: site LON, service manufacturing: first broken link at position 17, event 0199-e"
        " of aggregate B-1 v4 (cellbank.manufacturing.v1.BatchReleased): hash does not match"
    )
    down = ChainCheck("LON", "matching", "h:3", error="unreachable at h:3 (UNAVAILABLE)")
    assert check_line(down).split()[:3] == ["LON", "matching", "ERROR"]


def test_signatures_are_found_at_any_depth_and_need_a_signer_and_a_meaning():
    payload = {
        "signature": {"name": "quinn", "signed_at": "2026-11-26T14:05:07Z", "meaning": "M1"},
        "steps": [{"signature": {"signer": "bob", "meaning": "M2"}}],
        "other": {"signature": {"name": "nobody"}},  # no meaning: not an e-signature
        "signatures": [{"name": "x", "meaning": "not under a field named signature"}],
    }
    assert signatures(payload) == [
        Signature("quinn", "2026-11-26T14:05:07Z", "M1"),
        Signature("bob", "", "M2"),
    ]


def test_a_history_prints_one_row_per_event_and_a_line_per_signature():
    occurred = Timestamp()
    occurred.FromJsonString("2026-11-26T14:05:07.123456Z")
    payload = {"signature": {"name": "quinn", "signed_at": "2026-11-26T14:05:07.123Z",
                             "meaning": "Released for clinical use"}}  # fmt: skip
    history = opb.AggregateHistory(
        aggregate_id="B-1", aggregate_type="batch", site_id="LON", service="manufacturing",
        entries=[
            opb.HistoryEntry(position=3, version=1, event_type="cellbank.manufacturing.v1.BatchStarted",
                             occurred_at=occurred, actor="operator:alice", reason="manufacture",
                             payload_json="{}"),
            opb.HistoryEntry(position=9, version=2, event_type="cellbank.manufacturing.v1.BatchReleased",
                             occurred_at=occurred, actor="qa:quinn", reason="batch record reviewed",
                             payload_json=json.dumps(payload)),
        ],
    )  # fmt: skip
    lines = list(history_lines(history))
    assert lines[0] == "LON manufacturing: batch B-1 (2 events)"
    assert lines[1].split() == [
        "2026-11-26T14:05:07Z", "operator:alice", "BatchStarted", "manufacture"
    ]  # fmt: skip
    assert lines[2].split()[:3] == ["2026-11-26T14:05:07Z", "qa:quinn", "BatchReleased"]
    assert lines[3].strip() == (
        'signed by quinn at 2026-11-26T14:05:07Z: "Released for clinical use"'
    )
    records = list(history_records(history))
    assert records[1]["signatures"] == [
        {"name": "quinn", "signed_at": "2026-11-26T14:05:07.123Z",
         "meaning": "Released for clinical use"}
    ]  # fmt: skip
    assert records[1]["payload"] == payload and records[0]["occurred_at"].endswith("Z")


def test_a_command_that_cannot_reach_its_network_explains_why_with_exit_2(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["audit", "verify", "--site", "LON", "--endpoints", str(tmp_path / "none.json")],
        out,
        err,
    )
    assert code == 2 and "make run" in err.getvalue() and not out.getvalue()


def test_cellbank_help_lists_every_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "--help"],
        cwd=tmp_path,  # the repo comes from the venv's .pth, not the working directory
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "cellbank audit verify" in done.stdout and "cellbank audit log" in done.stdout
