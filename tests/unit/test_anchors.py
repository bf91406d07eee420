"""Chain anchors: signed by the store's site, verified against the trust list, refused when
forged, altered or garbled."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cellbank.common.v1 import anchor_pb2

from shared.anchors import Anchor, anchor_key, sign_anchor, verify_anchor
from shared.trust import Signer, TrustList, Untrusted

NOW = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
LON, MAN = Signer.generate("LON"), Signer.generate("MAN")
TRUST = TrustList(s.trusted_key(NOW - timedelta(days=1)) for s in (LON, MAN))
HEAD = Anchor("LON", "storage", 42, b"\x07" * 32, 41, NOW)


def test_an_anchor_round_trips_with_its_key_id():
    anchor = verify_anchor(TRUST, sign_anchor(LON, HEAD))
    assert anchor == replace(HEAD, key_id=LON.key_id)
    assert anchor.key == anchor_key("LON", "storage") == "LON.storage"


def test_a_site_cannot_anchor_another_sites_store():
    with pytest.raises(ValueError, match="a key of MAN cannot anchor a store of LON"):
        sign_anchor(MAN, HEAD)
    # Nor by crafting the record: MAN's key on an anchor claiming LON is refused.
    forged = anchor_pb2.ChainAnchor()
    forged.ParseFromString(sign_anchor(MAN, replace(HEAD, site_id="MAN")))
    forged.site_id = "LON"
    forged.ClearField("signature")
    forged.signature = MAN.sign(forged.SerializeToString(deterministic=True))
    with pytest.raises(Untrusted, match="key of MAN signs for LON"):
        verify_anchor(TRUST, forged.SerializeToString(deterministic=True))


@pytest.mark.parametrize(
    "change",
    [{"position": 99}, {"hash": b"\x08" * 32}, {"event_count": 1}, {"service": "matching"}],
)
def test_an_altered_anchor_fails_its_signature(change):
    message = anchor_pb2.ChainAnchor()
    message.ParseFromString(sign_anchor(LON, HEAD))
    for field, value in change.items():
        setattr(message, field, value)
    with pytest.raises(Untrusted, match="bad signature"):
        verify_anchor(TRUST, message.SerializeToString(deterministic=True))


def test_an_unknown_key_or_an_unsigned_anchor_is_untrusted():
    stranger = Signer.generate("LON")
    with pytest.raises(Untrusted, match="unknown key"):
        verify_anchor(TRUST, sign_anchor(stranger, HEAD))
    message = anchor_pb2.ChainAnchor()
    message.ParseFromString(sign_anchor(LON, HEAD))
    message.ClearField("signature")
    with pytest.raises(Untrusted, match="unsigned"):
        verify_anchor(TRUST, message.SerializeToString())


@pytest.mark.parametrize("data", [b"\xff\xfe garbage", b""])
def test_bytes_that_are_no_anchor_are_refused(data):
    with pytest.raises(ValueError):
        verify_anchor(TRUST, data)


def test_a_head_behind_the_anchor_does_not_extend_it():
    assert HEAD.extended_by(42, 41) and HEAD.extended_by(50, 49)
    assert not HEAD.extended_by(41, 40)  # the newest event was deleted
    assert not HEAD.extended_by(42, 40)  # one before it was
