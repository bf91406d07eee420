"""What the dashboard streams: real events' personal fields redacted by role, one reader fanned
out to capped, bounded subscribers (a stalled client holds up no one)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest
from cellbank.delivery.v1 import events_pb2 as delivery
from cellbank.donor.v1 import events_pb2 as donor
from cellbank.matching.v1 import events_pb2 as matching
from cellbank.storage.v1 import events_pb2 as storage
from google.protobuf.message import Message

from deploy.dashboard_events import EventHub, TooManyStreams, redacted
from shared.aggregate_history import payload_json
from shared.auth import OPERATOR, QA
from shared.event_watch import EventFilter, Watched
from shared.events import StoredEvent
from shared.redaction import REDACTED
from shared.waits import eventually

OPERATOR_ONLY = frozenset({OPERATOR})
OPERATOR_QA = frozenset({OPERATOR, QA})
PATIENT = matching.PatientSnapshot(
    patient_ref="PT-0001", weight_kg=70, hla_alleles=["A*02:01", "B*07:02"], abo="O",
    cmv="POSITIVE",
)  # fmt: skip


def watched(message: Message, aggregate: str = "X-1", reason: str = "", offset: int = 0) -> Watched:
    event_type = message.DESCRIPTOR.full_name
    payload = message.SerializeToString()
    event = StoredEvent(
        position=offset, event_id=f"e-{offset}", event_type=event_type, schema_version=1,
        aggregate_type=event_type.split(".")[1], aggregate_id=aggregate, aggregate_version=1,
        site_id="LON", occurred_at=datetime.now(UTC), recorded_at=datetime.now(UTC),
        actor="operator:alice", reason=reason, correlation_id="", causation_id="",
        payload=payload, prev_hash=b"", hash=b"",
    )  # fmt: skip
    return Watched("cellbank.x.events.v1", 0, offset, event, payload_json(event_type, payload))


def shown(record: dict[str, object]) -> str:
    return json.dumps(record)


def test_an_orders_patient_is_hidden_from_every_role() -> None:
    placed = watched(
        matching.OrderPlaced(hospital_id="H1", request_id="r1", patient=PATIENT, product_type="NK"),
        reason="urgent: relapse after transplant",
    )
    for roles in (OPERATOR_ONLY, OPERATOR_QA):
        record = redacted(placed, roles)
        assert record["payload"]["patient"] == REDACTED
        assert record["payload"]["hospital_id"] == "H1"
        assert record["payload"]["product_type"] == "NK"
        assert record["reason"] == REDACTED
        for secret in ("PT-0001", "A*02:01", "relapse", "POSITIVE"):
            assert secret not in shown(record)
        assert record["event_type"] == "cellbank.matching.v1.OrderPlaced"
        assert "OrderPlaced X-1" in str(record["summary"])


@pytest.mark.parametrize(
    ("message", "secrets"),
    [
        (donor.HlaTyped(loci=[donor.LocusTyping(locus="A", alleles=["A*11:01"])]), ["A*11:01"]),
        (donor.BloodGroupRecorded(abo="AB", rh="NEG"), ["AB", "NEG"]),
        (donor.CmvSerostatusRecorded(status="POSITIVE"), ["POSITIVE"]),
        (donor.ScreeningResultRecorded(marker="HIV", result="POSITIVE", specimen_date="2026-01-02"),
         ["HIV", "POSITIVE", "2026-01-02"]),
        (donor.KirGenotyped(genes=["KIR2DL1"]), ["KIR2DL1"]),
    ],
)  # fmt: skip
def test_donor_health_is_shown_to_qa_only(message: Message, secrets: list[str]) -> None:
    event = watched(message, aggregate="D-7")
    hidden = shown(redacted(event, OPERATOR_ONLY))
    for secret in secrets:
        assert secret not in hidden
    assert REDACTED in hidden and "D-7" in hidden
    seen = shown(redacted(event, OPERATOR_QA))
    for secret in secrets:
        assert secret in seen


def test_a_donors_reference_is_hidden_even_from_qa() -> None:
    event = watched(donor.DonorRegistered(donor_id="D-7", donor_ref="REF-93817"))
    for roles in (OPERATOR_ONLY, OPERATOR_QA):
        record = redacted(event, roles)
        assert "REF-93817" not in shown(record)
        assert record["payload"]["donor_id"] == "D-7"


def test_recall_notices_hide_the_patient_but_keep_the_units() -> None:
    raised = watched(delivery.RecallRaised(
        trigger="DONOR_POSITIVE", subject="D-7", reason="HBV positive on lookback",
        unit_ids=["U-1"], notices=[delivery.RecallNotice(order_id="O-1", hospital_id="H1",
                                                          unit_ids=["U-1"], patient_ref="PT-0001")],
    ))  # fmt: skip
    record = shown(redacted(raised, OPERATOR_ONLY))
    assert "PT-0001" not in record and "HBV" not in record
    assert "U-1" in record and "O-1" in record and "DONOR_POSITIVE" in record


def test_operational_events_pass_unchanged() -> None:
    stored = watched(storage.UnitStored(address="LON-T1/R1/B1/P01"), reason="stored")
    record = redacted(stored, OPERATOR_ONLY)
    assert record["payload"] == {"address": "LON-T1/R1/B1/P01"}
    assert record["reason"] == "stored"


def fake_source(events: list[Watched], opened: list[int]) -> AsyncGenerator[Watched, None]:
    async def source() -> AsyncGenerator[Watched, None]:
        opened.append(1)
        for event in events:
            yield event
            await asyncio.sleep(0)  # Kafka's batches come apart in time: readers get a turn
        await asyncio.Event().wait()  # a live stream: nothing more for now

    return source()


async def test_one_reader_serves_every_subscriber_and_a_stalled_one_blocks_no_one() -> None:
    events = [watched(storage.UnitMoved(to_address=f"P{i}"), offset=i) for i in range(40)]
    opened: list[int] = []
    hub = EventHub(lambda: fake_source(events, opened), queue_size=10, backlog=0)
    try:
        with (
            hub.subscribe("alice", EventFilter()) as stalled,
            hub.subscribe("bob", EventFilter()) as reader,
        ):
            got: list[Watched] = []

            async def read() -> None:
                while len(got) < len(events):
                    got.append(await reader.queue.get())

            await asyncio.wait_for(read(), timeout=10)
            assert [w.offset for w in got] == list(range(40))
            assert stalled.queue.qsize() == 10
            assert stalled.take_dropped() == 30  # told, not blocking
        assert hub.readers_opened == 1 and len(opened) == 1
        assert hub.streams == 0
    finally:
        await hub.stop()


async def test_streams_are_capped_in_total_and_per_person() -> None:
    hub = EventHub(lambda: fake_source([], []), max_streams=3, max_streams_per_user=2)
    try:
        with hub.subscribe("alice", EventFilter()), hub.subscribe("alice", EventFilter()):
            with pytest.raises(TooManyStreams, match="at most 2 per person"):
                with hub.subscribe("alice", EventFilter()):
                    pass
            with hub.subscribe("bob", EventFilter()):
                with pytest.raises(TooManyStreams, match="at most 3 live event streams"):
                    with hub.subscribe("carol", EventFilter()):
                        pass
            await eventually(
                lambda: asyncio.sleep(0, hub.readers_opened), until=lambda n: n == 1,
                timeout=5, what="the shared reader",
            )  # fmt: skip
        with hub.subscribe("carol", EventFilter()):
            assert hub.streams == 1  # slots come back when a stream ends
    finally:
        await hub.stop()


async def test_every_event_read_is_seen_by_the_charts_whoever_reads_it() -> None:
    events = [watched(storage.UnitMoved(to_address=f"P{i}"), offset=i) for i in range(5)]
    seen: list[int] = []
    hub = EventHub(
        lambda: fake_source(events, []), queue_size=2, on_event=lambda w: seen.append(w.offset)
    )
    try:
        with hub.subscribe("alice", EventFilter(event_type="HlaTyped")):  # shown none of them
            await eventually(
                lambda: asyncio.sleep(0, len(seen)), until=lambda n: n == 5, timeout=5,
                what="the events counted",
            )  # fmt: skip
        assert seen == [0, 1, 2, 3, 4]
    finally:
        await hub.stop()
