"""GetAggregateHistory's generic payload decoding, the history it builds, the chain's culprit."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cellbank.manufacturing.v1 import events_pb2 as mev
from google.protobuf.timestamp_pb2 import Timestamp

from shared.aggregate_history import (
    aggregate_history,
    event_module_names,
    import_modules,
    payload_json,
)
from shared.errors import NotFound
from shared.events import StoredEvent
from shared.eventstore import InMemoryEventStore
from shared.hashchain import GENESIS
from tests.factories import T0, new_event

REPO = Path(__file__).resolve().parents[2]
SIGNED_AT = datetime(2026, 11, 26, 14, 5, 7, tzinfo=UTC)


def stored(event_type: str, payload: bytes, version: int = 1, **changes: object) -> StoredEvent:
    event = StoredEvent(
        position=40 + version,
        event_id=str(uuid.uuid4()),
        event_type=event_type,
        schema_version=1,
        aggregate_type="batch",
        aggregate_id="B-1",
        aggregate_version=version,
        site_id="LON",
        occurred_at=T0 + timedelta(minutes=version),
        recorded_at=T0 + timedelta(minutes=version, seconds=1),
        actor="qa:quinn",
        reason="batch record reviewed",
        correlation_id="corr-7",
        causation_id="",
        payload=payload,
        prev_hash=GENESIS,
        hash=b"",
    )
    return replace(event, **changes)  # type: ignore[arg-type]


def released() -> bytes:
    signed_at = Timestamp()
    signed_at.FromDatetime(SIGNED_AT)
    message = mev.BatchReleased(
        signature=mev.Signature(
            name="quinn", signed_at=signed_at, meaning="Released for clinical use"
        ),
        donor_eligibility="ELIGIBLE",
        units=[mev.UnitRecord(unit_id="U-1", din="A9999 26 000001 X", division=1)],
    )
    return message.SerializeToString()


def test_a_payload_is_decoded_by_its_full_message_name_with_proto_field_names():
    decoded = json.loads(payload_json(mev.BatchReleased.DESCRIPTOR.full_name, released()))
    assert decoded["signature"] == {
        "name": "quinn",
        "signed_at": "2026-11-26T14:05:07Z",
        "meaning": "Released for clinical use",
    }
    assert decoded["donor_eligibility"] == "ELIGIBLE"
    assert decoded["units"][0]["unit_id"] == "U-1"  # proto names, not lowerCamelCase


def test_an_unknown_type_or_unparsable_bytes_keep_the_raw_payload_as_base64():
    raw = b"\xff\x00raw"
    for event_type in ("cellbank.nowhere.v1.Gone", mev.BatchReleased.DESCRIPTOR.full_name):
        data = raw if "nowhere" in event_type else b"\x0a\xff"  # field 1, truncated length
        decoded = json.loads(payload_json(event_type, data))
        assert decoded == {"undecodable": base64.b64encode(data).decode()}


def test_every_context_with_generated_events_is_discovered_and_nothing_else():
    names = event_module_names()
    for context in ("donor", "manufacturing", "storage", "matching"):
        assert f"cellbank.{context}.v1.events_pb2" in names
    assert not [n for n in names if n.split(".")[1] in {"common", "operator", "hospital"}]


def test_discovery_registers_other_contexts_without_anyone_importing_them():
    """In a fresh interpreter that never imported the donor protos, a donor event decodes."""
    script = textwrap.dedent(
        """
        import sys
        from shared.aggregate_history import payload_json
        assert "cellbank.donor.v1.events_pb2" not in sys.modules
        print(payload_json("cellbank.donor.v1.DonorRegistered", bytes.fromhex("0a024431")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"donor_id": "D1"}


def test_a_context_whose_module_fails_to_import_is_reported_and_the_rest_still_load(
    tmp_path, monkeypatch
):
    package = f"fakebank_{uuid.uuid4().hex[:8]}"
    for context, body in (("good", "LOADED = True\n"), ("bad", "raise RuntimeError('stale')\n")):
        folder = tmp_path / package / context / "v1"
        folder.mkdir(parents=True)
        (folder / "events_pb2.py").write_text(body)
    (tmp_path / package / "nov1").mkdir()  # a context folder without v1 is not a context
    monkeypatch.syspath_prepend(str(tmp_path))
    names = event_module_names(package)
    assert names == [f"{package}.bad.v1.events_pb2", f"{package}.good.v1.events_pb2"]
    failed = import_modules(names)
    assert list(failed) == [f"{package}.bad.v1.events_pb2"]
    assert "RuntimeError: stale" in failed[f"{package}.bad.v1.events_pb2"]
    assert sys.modules[f"{package}.good.v1.events_pb2"].LOADED


def test_the_history_carries_every_envelope_field_an_auditor_reads():
    first = stored("cellbank.nowhere.v1.Gone", b"\x01", version=1, actor="operator:alice")
    second = stored(mev.BatchReleased.DESCRIPTOR.full_name, released(), version=2)
    history = aggregate_history("B-1", [first, second], site_id="LON", service="manufacturing")
    assert (history.aggregate_id, history.aggregate_type) == ("B-1", "batch")
    assert (history.site_id, history.service) == ("LON", "manufacturing")
    entry = history.entries[1]
    assert (entry.position, entry.version, entry.event_id) == (42, 2, second.event_id)
    assert (entry.actor, entry.reason, entry.correlation_id) == (
        "qa:quinn",
        "batch record reviewed",
        "corr-7",
    )
    assert entry.event_type == "cellbank.manufacturing.v1.BatchReleased"
    assert entry.occurred_at.ToDatetime(tzinfo=UTC) == second.occurred_at
    assert entry.recorded_at.ToDatetime(tzinfo=UTC) == second.recorded_at
    assert json.loads(entry.payload_json)["signature"]["name"] == "quinn"
    assert json.loads(history.entries[0].payload_json) == {"undecodable": "AQ=="}


def test_an_aggregate_without_events_is_not_found_naming_it_and_the_store():
    with pytest.raises(NotFound, match=r"'B-404' has no events in LON storage"):
        aggregate_history("B-404", [], site_id="LON", service="storage")


async def test_a_broken_chain_names_the_stored_event_it_broke_at():
    store = InMemoryEventStore("LON")
    events = (await store.append("agg-1", 0, [new_event(n) for n in range(3)])).events
    store.tamper(events[1].position, reason="rewritten")
    report = await store.verify_chain()
    assert not report.intact and report.broken_at_position == events[1].position
    assert report.broken_event is not None
    assert report.broken_event.event_id == events[1].event_id
    assert report.broken_event.reason == "rewritten"
