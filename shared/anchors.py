"""Chain anchors: a store's head (position, hash, count) signed by its site, and their check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cellbank.common.v1 import anchor_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from shared.proto_mapping import timestamp_to_datetime
from shared.trust import Signer, TrustList, Untrusted

HASH_BYTES = 32


@dataclass(frozen=True, slots=True)
class Anchor:
    """What a site attests of one of its stores at a moment: "my chain's head is here"."""

    site_id: str
    service: str
    position: int
    hash: bytes
    event_count: int
    anchored_at: datetime
    key_id: str = ""

    @property
    def key(self) -> str:
        return anchor_key(self.site_id, self.service)

    def extended_by(self, position: int, event_count: int) -> bool:
        """Whether a head at (position, count) can be this one's continuation (never behind)."""
        return position >= self.position and event_count >= self.event_count


def anchor_key(site_id: str, service: str) -> str:
    """The record key on cellbank.anchors.v1: every anchor of a store in one partition."""
    return f"{site_id}.{service}"


def _message(anchor: Anchor, key_id: str) -> anchor_pb2.ChainAnchor:
    at = Timestamp()
    at.FromDatetime(anchor.anchored_at)
    return anchor_pb2.ChainAnchor(
        site_id=anchor.site_id, service=anchor.service, position=anchor.position,
        hash=anchor.hash, event_count=anchor.event_count, anchored_at=at, signing_key_id=key_id,
    )  # fmt: skip


def sign_anchor(signer: Signer, anchor: Anchor) -> bytes:
    """The anchor's record value: signed over its deterministic bytes with the signature empty
    (the key id included)."""
    if signer.site != anchor.site_id:
        raise ValueError(f"a key of {signer.site} cannot anchor a store of {anchor.site_id}")
    message = _message(anchor, signer.key_id)
    message.signature = signer.sign(message.SerializeToString(deterministic=True))
    return message.SerializeToString(deterministic=True)


def verify_anchor(trust: TrustList, data: bytes) -> Anchor:
    """Decode and verify an anchor record: ValueError for bytes that are no anchor, Untrusted
    when the trust list does not vouch for its signature (or the key is another site's)."""
    message = anchor_pb2.ChainAnchor()
    try:
        message.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError is a bare Exception subclass
        raise ValueError(f"not a ChainAnchor: {exc}") from exc
    if not message.site_id or not message.service or len(message.hash) != HASH_BYTES:
        raise ValueError("ChainAnchor lacks site_id, service or a 32-byte hash")
    if not message.signature:
        raise Untrusted("unsigned", site_id=message.site_id)
    signature = message.signature
    message.ClearField("signature")
    anchored_at = timestamp_to_datetime(message.anchored_at)
    trust.verify(
        message.site_id, message.signing_key_id, message.SerializeToString(deterministic=True),
        signature, anchored_at,
    )  # fmt: skip
    return Anchor(
        message.site_id, message.service, message.position, message.hash, message.event_count,
        anchored_at, message.signing_key_id,
    )  # fmt: skip
