"""`cellbank` without a network: the endpoints file (as `make run` writes it and as the CLI reads
it), the sign-in's token cache and device-flow polling, the report lines, signature extraction,
and the commands' listing."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cellbank.operator.v1 import operator_service_pb2 as opb
from google.protobuf.timestamp_pb2 import Timestamp

from deploy.cli import CliError, main
from deploy.cli.chains import ChainCheck, broken_link, check_line
from deploy.cli.endpoints import load_endpoints, parse_endpoints, signed_in_token
from deploy.cli.history import Signature, history_lines, history_records, signatures
from deploy.identities import demo_realm
from deploy.keycloak import Identity
from deploy.network import plan
from deploy.processes import free_port
from deploy.run import endpoints_document, write_endpoints_file
from deploy.sign_in import Provider, Session, SignInError, device_login, load, save, token_file
from shared.topics import SERVICES

REPO = Path(__file__).resolve().parents[2]


ISSUER = "http://127.0.0.1:1/realms/cellbank"


def test_make_run_writes_every_site_service_hospital_and_the_demo_identities(tmp_path):
    sites = ["LON", "MAN", "EDI"]
    services = plan(sites, 50100, 9300)
    path = tmp_path / "endpoints.json"
    operator = {"CELLBANK_KAFKA_USERNAME": "operator", "CELLBANK_KAFKA_PASSWORD_FILE": "/x"}
    document = endpoints_document(
        services,
        sites,
        "127.0.0.1:9092",
        trust_list="/x/trust-list.json",
        identity=Identity(ISSUER),
        kafka_env=operator,
    )
    write_endpoints_file(path, document)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the demo passwords
    document = json.loads(path.read_text())
    assert set(document) == {
        "identity", "sites", "hospitals", "users", "kafka", "kafka_env", "database_url",
        "dashboard", "trust_list", "database_roles", "chain_keys",
    }  # fmt: skip
    assert document["kafka_env"] == operator  # the CLI's read-only Kafka principal
    assert document["trust_list"] == "/x/trust-list.json"  # watch, replay, dashboard verify with it
    assert document["identity"] == {
        "issuer": ISSUER,
        "token_url": f"{ISSUER}/protocol/openid-connect/token",
        "jwks_url": f"{ISSUER}/protocol/openid-connect/certs",
        "cli_client_id": "cellbank-cli",
    }
    assert document["kafka"] == "127.0.0.1:9092"
    assert list(document["sites"]) == sites
    lon = document["sites"]["LON"]
    assert lon["donor_intake"] == "127.0.0.1:50100" and lon["storage"] == "127.0.0.1:50102"
    assert lon["hospital_api"] == lon["matching"] and lon["operator_api"] == lon["storage"]
    for site, entries in document["sites"].items():
        assert {s.service for s in services if s.site == site} <= set(entries)
    realm = demo_realm()
    assert [(h["id"], h["home_site"]) for h in document["hospitals"]] == [
        ("H1", "LON"),
        ("H2", "MAN"),
        ("H3", "EDI"),
    ]
    for hospital in document["hospitals"]:
        assert set(hospital) == {
            "id", "home_site", "hospital_api", "client_id", "client_secret", "clinicians"
        }  # fmt: skip
        assert hospital["hospital_api"] == document["sites"][hospital["home_site"]]["matching"]
        client = realm.clients[hospital["client_id"]]
        assert (client.hospital, client.secret) == (hospital["id"], hospital["client_secret"])
        assert hospital["clinicians"] == [
            {"username": u.username, "password": u.password, "name": u.name}
            for u in realm.clinicians(hospital["id"])
        ]
        assert hospital["clinicians"], f"{hospital['id']} has nobody to sign for it"
    users = {u["username"]: u for u in document["users"]}
    assert set(users) == {"alice", "bob", "quinn", "carl", "cora"}  # no clinician, no system
    assert users["alice"] == {
        "username": "alice", "password": "demo-alice", "name": "Alice Morgan",
        "roles": ["operator", "qa"], "site": "LON",
    }  # fmt: skip
    assert users["carl"]["roles"] == ["courier"]
    assert "token" not in json.dumps(list(document["hospitals"][0]))  # static tokens are gone
    assert not list(tmp_path.glob(".*partial"))  # written by rename: never seen half-written
    endpoints = load_endpoints(path, env={})  # and the CLI reads exactly what make run writes
    assert [s for s, _ in endpoints.services_of("MAN")] == [s for s in SERVICES if s in lon]
    assert endpoints.identity == document["identity"]


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
        ({"sites": {"LON": {"storage": "h:1"}}, "identity": "x"}, "identity:"),
        ({"sites": {"LON": {"storage": "h:1"}}, "identity": {"issuer": 7}}, "identity:"),
    ],
)
def test_a_malformed_endpoints_file_names_the_field(document, field):
    with pytest.raises(CliError, match=field):
        parse_endpoints(document, Path("e.json"))


def test_sites_are_named_case_insensitively_and_checked_against_the_file():
    endpoints = parse_endpoints({"sites": {"lon": {"storage": "h:1"}}}, Path("e.json"))
    assert endpoints.site_names() == ["LON"] and endpoints.site_names("lon") == ["LON"]
    with pytest.raises(CliError, match=r"'EDI' is not in e.json \(sites: LON\)"):
        endpoints.site_names("EDI")


def test_without_a_sign_in_a_command_says_to_run_cellbank_login_and_exits_2(tmp_path):
    issuer = f"http://127.0.0.1:{free_port()}/realms/cellbank"  # nobody answers there
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"sites": {"LON": {"storage": "127.0.0.1:1"}},
                                "identity": {"issuer": issuer}}))  # fmt: skip
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    with pytest.raises(CliError, match=r"not signed in: run `cellbank login`"):
        signed_in_token(load_endpoints(path, env={}), env=env)
    code = subprocess.run(  # the installed command: the message and the exit code it gives
        [sys.executable, "-m", "deploy.cli", "audit", "verify", "--endpoints", str(path)],
        env={**_clean_env(), **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert code.returncode == 2 and not code.stdout, code.stderr
    assert "cellbank: error: not signed in: run `cellbank login`" in code.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CELLBANK_")}


def test_the_token_cache_is_per_issuer_and_readable_by_its_owner_only(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    path = token_file(ISSUER, env)
    assert path.parent == tmp_path / "cellbank" / "tokens"
    assert token_file(ISSUER + "/", env) == path != token_file(ISSUER + "-other", env)
    assert token_file(ISSUER, {}).is_relative_to(Path.home() / ".cellbank" / "tokens")
    session = Session(ISSUER, "cellbank-cli", "password", "alice", "at", time.time() + 300, "rt")
    save(session, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load(path) == session and session.fresh()
    path.write_text("{not json")
    assert load(path) is None  # a damaged cache is a sign-out, not a crash


class FakeIssuer:
    """The device endpoint and the token endpoint, answering from a script."""

    def __init__(self, token_replies: list[tuple[int, dict[str, Any]]]) -> None:
        self.token_replies = token_replies
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.slept: list[float] = []
        self.now = 0.0

    def post(self, url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.calls.append((url, form))
        if url.endswith("/device"):
            return 200, {
                "device_code": "DC", "user_code": "WXYZ-1234", "interval": 2, "expires_in": 30,
                "verification_uri": "http://idp/device",
                "verification_uri_complete": "http://idp/device?user_code=WXYZ-1234",
            }  # fmt: skip
        return self.token_replies.pop(0)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


PROVIDER = Provider(ISSUER, "http://idp/token", "http://idp/device")


def _login(issuer: FakeIssuer) -> tuple[Session, list[str]]:
    told: list[str] = []
    session = device_login(
        PROVIDER, told.append, post=issuer.post, sleep=issuer.sleep, clock=issuer.clock
    )
    return session, told


def test_the_device_flow_shows_the_url_and_code_then_polls_slowing_down_when_asked():
    import jwt

    access = jwt.encode({"preferred_username": "alice", "azp": "cellbank-cli"}, "k" * 32)
    issuer = FakeIssuer([
        (400, {"error": "authorization_pending"}),
        (400, {"error": "slow_down"}),
        (400, {"error": "authorization_pending"}),
        (200, {"access_token": access, "expires_in": 900, "refresh_token": "rt"}),
    ])  # fmt: skip
    session, told = _login(issuer)
    assert "http://idp/device?user_code=WXYZ-1234" in told[0] and "WXYZ-1234" in told[1]
    assert issuer.slept == [2, 2, 7, 7]  # the interval, +5 s after slow_down (RFC 8628)
    polls = [form for url, form in issuer.calls if url == "http://idp/token"]
    assert all(
        form == {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                 "device_code": "DC", "client_id": "cellbank-cli"}
        for form in polls
    )  # fmt: skip
    assert (session.who, session.grant, session.refresh_token) == ("alice", "device_code", "rt")


@pytest.mark.parametrize(
    ("replies", "message"),
    [
        ([(400, {"error": "access_denied"})], "declined"),
        ([(400, {"error": "expired_token"})], "expired"),
        ([(400, {"error": "authorization_pending"})] * 20, "expired"),  # past expires_in
        ([(400, {"error": "invalid_client", "error_description": "no"})], "invalid_client: no"),
    ],
)
def test_the_device_flow_stops_when_declined_expired_or_refused(replies, message):
    with pytest.raises(SignInError, match=message):
        _login(FakeIssuer(list(replies)))


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
         "meaning": "Released for clinical use", "subject": "", "event_id": "",
         "content_hash": ""}
    ]  # fmt: skip
    assert records[1]["payload"] == payload and records[0]["occurred_at"].endswith("Z")


def test_history_names_the_traces_its_events_were_appended_in():
    traced, other = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
    history = opb.AggregateHistory(
        aggregate_id="ORD-MAN-1", aggregate_type="order", site_id="MAN", service="matching",
        entries=[
            opb.HistoryEntry(position=1, version=1, event_type="cellbank.matching.v1.OrderPlaced",
                             actor="hospital:h1", reason="order", trace_id=traced),
            opb.HistoryEntry(position=2, version=2, event_type="cellbank.matching.v1.UnitsAllocated",
                             actor="matching", reason="allocated", trace_id=traced),
            opb.HistoryEntry(position=5, version=3, event_type="cellbank.matching.v1.OrderCancelled",
                             actor="hospital:h1", reason="cancel", trace_id=other),
            opb.HistoryEntry(position=6, version=4, event_type="cellbank.matching.v1.Untraced",
                             actor="matching", reason="before tracing"),
        ],
    )  # fmt: skip
    lines = list(history_lines(history))
    assert lines[-2:] == [
        f"  trace {traced}: OrderPlaced, UnitsAllocated",
        f"  trace {other}: OrderCancelled",
    ]
    assert [r["trace_id"] for r in history_records(history)] == [traced, traced, other, ""]


def test_a_part_11_signature_shows_its_signer_id_and_the_record_it_signs():
    payload = {"signature": {"signer_name": "Clara Hughes", "meaning": "Received intact",
                             "signed_at": "2026-11-26T14:05:07Z", "signer_subject": "sub-1",
                             "event_id": "e-1", "content_hash": "ab" * 32}}  # fmt: skip
    (found,) = signatures(payload)
    assert (found.name, found.subject, found.event_id) == ("Clara Hughes", "sub-1", "e-1")
    assert found.content_hash == "ab" * 32


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
        cwd=tmp_path,  # the code comes from the editable install, not the working directory
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "cellbank audit verify" in done.stdout and "cellbank audit log" in done.stdout


def test_the_cli_talks_to_the_files_kafka_as_the_files_principal_and_restores_the_env():
    from deploy.cli.endpoints import kafka_credentials_of

    env = {"CELLBANK_KAFKA_USERNAME": "admin", "CELLBANK_KAFKA_PASSWORD": "session"}
    document = {
        "kafka_env": {
            "CELLBANK_KAFKA_USERNAME": "operator",
            "CELLBANK_KAFKA_PASSWORD": "",
            "CELLBANK_KAFKA_PASSWORD_FILE": "/run/operator",
            "NOT_KAFKA": "ignored",
        }
    }
    with kafka_credentials_of(document, True, env):
        assert env == {
            "CELLBANK_KAFKA_USERNAME": "operator",
            "CELLBANK_KAFKA_PASSWORD": "",
            "CELLBANK_KAFKA_PASSWORD_FILE": "/run/operator",
        }
    assert env == {"CELLBANK_KAFKA_USERNAME": "admin", "CELLBANK_KAFKA_PASSWORD": "session"}
    with kafka_credentials_of(document, False, env):  # --kafka given: the caller's principal
        assert env["CELLBANK_KAFKA_USERNAME"] == "admin"
    with pytest.raises(CliError, match="kafka_env"):
        with kafka_credentials_of({"kafka_env": "operator"}, True, env):
            pass
