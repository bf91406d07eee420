"""A store's head held against its site's newest anchor and its events on Kafka: a deleted
tail, a truncated table and a rewritten anchored row are each named; a store ahead is fine."""

from __future__ import annotations

from datetime import UTC, datetime

from deploy.audit_evidence import Evidence, LogHead, held_against
from shared.anchors import Anchor

H40, H42, OTHER = b"\x40" * 32, b"\x42" * 32, b"\x99" * 32
ANCHOR = Anchor("LON", "storage", 42, H42, 42, datetime(2026, 11, 29, tzinfo=UTC))
LOG = LogHead(42, H42, 42)


def test_a_store_holding_the_anchored_and_published_head_is_consistent():
    evidence = Evidence(ANCHOR, LOG)
    assert evidence.positions() == [42]
    assert held_against(evidence, head_position=42, event_count=42, hashes={42: H42}) == ""
    # Ahead of both: events appended since (not anchored or published yet).
    assert held_against(evidence, head_position=50, event_count=50, hashes={42: H42}) == ""


def test_a_deleted_tail_names_where_the_store_ends_and_where_the_evidence_does():
    finding = held_against(
        Evidence(ANCHOR, LOG), head_position=40, event_count=40, hashes={40: H40}
    )
    assert finding == (
        "store ends at position 40, anchor at 42 / Kafka holds up to 42: its newest events"
        " were deleted"
    )
    only_kafka = held_against(
        Evidence(None, LogHead(45, OTHER, 45)), head_position=42, event_count=42, hashes={}
    )
    assert only_kafka.startswith("store ends at position 42, Kafka holds up to 45")


def test_a_truncated_table_is_an_empty_store_the_evidence_says_had_events():
    finding = held_against(Evidence(ANCHOR, LOG), head_position=0, event_count=0, hashes={})
    assert finding == (
        "store is empty, anchor at 42 / Kafka holds up to 42: its events were deleted (truncated)"
    )


def test_a_rewritten_anchored_row_is_named_by_its_position():
    finding = held_against(
        Evidence(ANCHOR, None), head_position=43, event_count=43, hashes={42: OTHER}
    )
    assert finding == "the event at position 42 has another hash than the anchor: rewritten"
    gone = held_against(Evidence(ANCHOR, None), head_position=43, event_count=42, hashes={})
    assert gone == "the event at position 42 is gone (the anchor holds it)"


def test_fewer_events_than_anchored_means_deleted_events():
    finding = held_against(
        Evidence(ANCHOR, None), head_position=42, event_count=41, hashes={42: H42}
    )
    assert finding == "store holds 41 events, the anchor 42: events were deleted"


def test_without_anchor_or_log_only_the_chain_speaks():
    assert held_against(Evidence(None, None), head_position=0, event_count=0, hashes={}) == ""
    assert Evidence(None, None).positions() == []
