"""Forged envelopes, the way an authenticated but hostile client of the broker would make them:
each is a well-formed envelope that the trust list must refuse, with the reason it must give."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from shared.envelope_codec import encode, parse
from shared.events import StoredEvent
from shared.kafka_clients import producer as kafka_producer
from shared.trust import Signer, sign_event


@dataclass(frozen=True, slots=True)
class Forgery:
    label: str
    value: bytes
    key: str  # the record key (the aggregate it targets)
    reason: str  # what the consumers must count it as (shared.untrusted.REASONS)


def forgeries(event: StoredEvent, *, genuine: Signer, other_site: Signer) -> list[Forgery]:
    """Four forgeries of `event` (which claims genuine.site): (a) signed with a key no trust list
    names, (b) signed with another site's valid key, still claiming the event's site, (c)
    unsigned, (d) signed with the genuine key, then altered."""
    assert event.site_id == genuine.site and other_site.site != genuine.site
    stranger = Signer.generate(genuine.site, f"{genuine.site}-stolen-looking")
    altered = parse(sign_event(genuine, event))
    altered.actor = "mallory"  # the signature no longer covers what the record says
    key = event.aggregate_id
    return [
        Forgery("unknown key", sign_event(stranger, event), key, "unknown_key"),
        Forgery("another site's key", sign_event(other_site, event), key, "wrong_site"),
        Forgery("unsigned", encode(event), key, "unsigned"),
        Forgery("altered after signing", altered.SerializeToString(), key, "bad_signature"),
    ]


def forged_copy(event: StoredEvent, **changes: object) -> StoredEvent:
    return replace(event, **changes)  # type: ignore[arg-type]


async def send_raw(bootstrap: str, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
    """Publish records as they are, straight to the topic (no relay, no signing), as the
    environment's Kafka principal (an authenticated client of the broker)."""
    producer = kafka_producer(bootstrap, acks="all", enable_idempotence=True)
    try:
        await producer.start()
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()
