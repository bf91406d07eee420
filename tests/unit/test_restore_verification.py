"""Before a restore writes anything, the site's log is verified: every record's signature,
every keyed hash from genesis, every link. The first bad record or link is named."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.chain_key import ChainKey
from shared.events import StoredEvent
from shared.eventstore import InMemoryEventStore
from shared.log_chain import BrokenChain, LogRecord, restorable
from shared.trust import Signer, TrustList, sign_event
from tests.factories import new_event

LON, MAN = Signer.generate("LON"), Signer.generate("MAN")
TRUST = TrustList(s.trusted_key(datetime.now(UTC) - timedelta(days=1)) for s in (LON, MAN))


async def store_log(n: int = 6) -> tuple[ChainKey, list[StoredEvent]]:
    key = ChainKey.generate()
    store = InMemoryEventStore("LON", chain_key=key)
    for i in range(n):
        await store.append(f"agg-{i % 2}", i // 2, [new_event(i)])
    return key, await store.read_all()


def records(events: list[StoredEvent], signer: Signer = LON) -> list[LogRecord]:
    return [
        LogRecord("cellbank.test.v1", e.position % 3, e.position, sign_event(signer, e))
        for e in events
    ]


async def test_an_intact_log_is_restored_in_store_order_duplicates_folded():
    key, events = await store_log()
    log = records(events)
    shuffled = [*log, log[2]]  # at-least-once: one published twice
    random.Random(7).shuffle(shuffled)
    assert restorable(shuffled, site_id="LON", key=key, trust=TRUST) == events


async def test_an_altered_record_resigned_with_the_sites_key_is_refused_by_its_hash():
    """The relay's key signs anything (a compromised relay): the contents changed, the hash
    kept. The keyed hash, which only the store's key makes, names it."""
    key, events = await store_log()
    altered = replace(events[3], reason="never happened")
    log = records([*events[:3], altered, *events[4:]])
    with pytest.raises(BrokenChain) as refused:
        restorable(log, site_id="LON", key=key, trust=TRUST)
    e = events[3]
    assert str(refused.value) == (
        f"position {e.position}, event {e.event_id} of aggregate {e.aggregate_id}"
        f" v{e.aggregate_version} ({e.event_type}): hash does not match the event's contents"
        " (altered after it was recorded, or hashed with another key)"
    )


async def test_a_record_whose_signature_does_not_verify_is_refused_naming_where_it_is():
    key, events = await store_log()
    log = records(events)
    tampered = bytearray(log[2].value)
    tampered[log[2].value.index(b"payload-2")] ^= 0x01  # the contents; the signature as it was
    log[2] = replace(log[2], value=bytes(tampered))
    with pytest.raises(BrokenChain) as refused:
        restorable(log, site_id="LON", key=key, trust=TRUST)
    message = str(refused.value)
    e = events[2]
    assert message == (
        f"record {log[2].where} (event {e.event_id} of aggregate {e.aggregate_id}"
        f" v{e.aggregate_version}, site LON, key {LON.key_id}) does not verify: bad signature"
    )


async def test_another_sites_key_claiming_the_site_is_refused():
    key, events = await store_log()
    log = records(events)
    log[1] = records([events[1]], signer=MAN)[0]
    where = re.escape(log[1].where)
    with pytest.raises(BrokenChain, match=f"record {where} .* key of MAN signs for LON"):
        restorable(log, site_id="LON", key=key, trust=TRUST)


async def test_a_missing_record_breaks_the_link_of_the_one_after_it():
    key, events = await store_log()
    log = records([*events[:2], *events[3:]])
    with pytest.raises(BrokenChain, match=f"position {events[3].position}, event .*prev_hash"):
        restorable(log, site_id="LON", key=key, trust=TRUST)


async def test_a_log_hashed_with_another_key_is_refused_at_its_first_event():
    _, events = await store_log()
    with pytest.raises(BrokenChain, match=f"position {events[0].position}, .*hash does not"):
        restorable(records(events), site_id="LON", key=ChainKey.generate(), trust=TRUST)


async def test_one_event_twice_with_different_contents_is_refused():
    key, events = await store_log()
    twin = replace(events[4], actor="operator:mallory")
    log = [*records(events), *records([twin])]
    with pytest.raises(BrokenChain, match=f"event {events[4].event_id} is on the log twice"):
        restorable(log, site_id="LON", key=key, trust=TRUST)
