"""The consumers' verdict on each record: applied only if the trust list vouches for it and its
record key is its aggregate's; otherwise refused with one of a few counted reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord

from shared.events import StoredEvent
from shared.trust import Signer, TrustList, Untrusted, sign_event
from shared.untrusted import (
    ERROR_PREFIX,
    KEY_DIFFERS,
    KEY_NOT_VALID,
    REASONS,
    UNDECODABLE,
    Refused,
    judge,
    judge_one,
    reason_of,
)
from tests.forgeries import forgeries

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROTATED = T0 + timedelta(days=30)


def event(site: str = "LON", *, at: datetime = T0 + timedelta(days=10), n: int = 1) -> StoredEvent:
    return StoredEvent(
        position=n, event_id=f"0190f0f0-0000-7000-8000-{n:012d}",
        event_type="cellbank.storage.v1.UnitStored", schema_version=1, aggregate_type="unit",
        aggregate_id="W1234 26 000001", aggregate_version=n, site_id=site,
        occurred_at=at, recorded_at=at, actor="alice", reason="stored",
        correlation_id="c", causation_id="", payload=b"\x0a\x03abc", prev_hash=b"\x00" * 32,
        hash=b"\x01" * 32,
    )  # fmt: skip


def record(value: bytes, key: str = "W1234 26 000001", offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        "cellbank.storage.events.v1", 2, offset, 0, 0, key.encode(), value, None, len(key),
        len(value), (),
    )  # fmt: skip


@pytest.fixture(scope="module")
def lon_old() -> Signer:
    return Signer.generate("LON", "LON-old")


@pytest.fixture(scope="module")
def lon() -> Signer:
    return Signer.generate("LON", "LON-new")


@pytest.fixture(scope="module")
def man() -> Signer:
    return Signer.generate("MAN", "MAN-1")


@pytest.fixture(scope="module")
def trust(lon_old: Signer, lon: Signer, man: Signer) -> TrustList:
    """LON rotated its key at ROTATED: the old one is retired, the new one valid since."""
    return TrustList(
        [lon_old.trusted_key(T0, ROTATED), lon.trusted_key(ROTATED), man.trusted_key(T0)]
    )


def test_a_genuine_record_is_applied_as_its_event(lon_old: Signer, trust: TrustList) -> None:
    e = event()
    assert judge_one(trust, record(sign_event(lon_old, e))) == e


@pytest.mark.parametrize("which", range(4))
def test_each_forgery_is_refused_with_its_reason_and_the_claim_it_made(
    which: int, lon_old: Signer, man: Signer, trust: TrustList
) -> None:
    forged = forgeries(event(), genuine=lon_old, other_site=man)[which]
    verdict = judge_one(trust, record(forged.value, forged.key, offset=41))
    assert isinstance(verdict, Refused), forged.label
    assert verdict.reason == forged.reason
    assert verdict.error.startswith(ERROR_PREFIX)
    assert verdict.claimed_site == "LON"
    assert verdict.event_id == event().event_id and verdict.aggregate_id == forged.key
    assert (verdict.topic, verdict.partition, verdict.offset) == (
        "cellbank.storage.events.v1",
        2,
        41,
    )


def test_another_sites_key_is_named_in_the_refusal(
    lon_old: Signer, man: Signer, trust: TrustList
) -> None:
    verdict = judge_one(trust, record(sign_event(man, event("LON"))))
    assert isinstance(verdict, Refused) and verdict.key_id == "MAN-1"
    assert "key of MAN signs for LON" in verdict.error


def test_a_retired_key_still_vouches_for_what_it_signed_while_valid(
    lon_old: Signer, lon: Signer, trust: TrustList
) -> None:
    before = event(at=ROTATED - timedelta(seconds=1))
    assert judge_one(trust, record(sign_event(lon_old, before))) == before
    after = event(at=ROTATED + timedelta(seconds=1), n=2)
    refused = judge_one(trust, record(sign_event(lon_old, after)))
    assert isinstance(refused, Refused) and refused.reason == KEY_NOT_VALID
    assert judge_one(trust, record(sign_event(lon, after))) == after  # the new key does


def test_a_genuine_envelope_under_another_aggregates_key_is_refused_not_applied(
    lon_old: Signer, trust: TrustList
) -> None:
    verdict = judge_one(trust, record(sign_event(lon_old, event()), key="W9999 26 000009"))
    assert isinstance(verdict, Refused) and verdict.reason == KEY_DIFFERS


def test_garbage_is_refused_as_undecodable_and_claims_nothing(trust: TrustList) -> None:
    verdict = judge_one(trust, record(b"\xff\x00not an envelope"))
    assert isinstance(verdict, Refused) and verdict.reason == UNDECODABLE
    assert verdict.claimed_site == verdict.event_id == ""


def test_a_batch_is_split_into_trusted_and_refused_by_offset(
    lon_old: Signer, man: Signer, trust: TrustList
) -> None:
    good = [event(n=n) for n in (1, 2)]
    records = [
        record(sign_event(lon_old, good[0]), offset=0),
        record(sign_event(man, event(n=9)), offset=1),
        record(sign_event(lon_old, good[1]), offset=2),
    ]
    verdicts = judge(trust, records)
    assert verdicts.trusted == {0: good[0], 2: good[1]}
    assert list(verdicts.refused) == [1]


def test_reasons_are_a_fixed_set_whatever_the_words() -> None:
    words = [
        "unsigned", "unknown key", "key of MAN signs for LON", "key not valid at 2026-01-01Z",
        "bad signature", "malformed signature", "malformed proof",
    ]  # fmt: skip
    assert {reason_of(Untrusted(w)) for w in words} <= set(REASONS)
