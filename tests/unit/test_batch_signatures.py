"""Batch (Merkle) signatures: one Ed25519 signature per batch of envelopes, every envelope still
verifiable alone (shared.trust), and nothing a forger can change about one gets past a consumer."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from hashlib import sha256

import pytest
from cellbank.common.v1 import envelope_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import StoredEvent
from shared.trust import (
    BATCH_LEAVES,
    Signer,
    TrustList,
    Untrusted,
    batch_message,
    fold_proof,
    leaf_hash,
    merkle_tree,
    sign_batch,
    sign_bodies,
    signing_body,
    verify_envelope,
)
from tests.unit.test_trust import T0, event

LON = Signer.generate("LON", "LON-1")
LON_NEXT = Signer.generate("LON", "LON-2")
MAN = Signer.generate("MAN", "MAN-1")
SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256,
         257, 300]  # fmt: skip


def trust() -> TrustList:
    """A fresh list each time: nothing verified yet, so nothing cached."""
    return TrustList([LON.trusted_key(T0), LON_NEXT.trusted_key(T0), MAN.trusted_key(T0)])


def events(n: int, site: str = "LON", salt: int = 0) -> list[StoredEvent]:
    return [
        replace(
            event(site), position=i + 1, event_id=f"0190f0f0-0000-7000-8000-{salt:04d}{i:08d}",
            aggregate_id=f"W1234 26 {i:06d}", actor=f"alice-{salt}",
        )
        for i in range(n)
    ]  # fmt: skip


def batch(signer: Signer, evs: Sequence[StoredEvent]) -> list[bytes]:
    return sign_batch(signer, [signing_body(signer, e) for e in evs])


def reason(trust_list: TrustList, data: bytes) -> str:
    with pytest.raises(Untrusted) as caught:
        verify_envelope(trust_list, data)
    return caught.value.reason


def refused(trust_list: TrustList, data: bytes) -> bool:
    try:
        verify_envelope(trust_list, data)
    except (Untrusted, ValueError):
        return True
    return False


def edited(data: bytes, **fields: object) -> bytes:
    env = envelope_pb2.EventEnvelope.FromString(data)
    for name, value in fields.items():
        if name == "batch_proof":
            env.ClearField("batch_proof")
            env.batch_proof.extend(value)  # type: ignore[arg-type]
        else:
            setattr(env, name, value)
    return env.SerializeToString(deterministic=True)


# --- the tree is RFC 6962's ---------------------------------------------------------------


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 2.1 MTH, as the RFC writes it (over leaf hashes)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n]), leaf to root."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


@pytest.mark.parametrize("n", SIZES[:20])
def test_the_tree_and_its_audit_paths_are_rfc_6962s(n: int) -> None:
    leaves = [leaf_hash(bytes([i % 256, i // 256])) for i in range(n)]
    root, paths = merkle_tree(leaves)
    assert root == mth(leaves)
    for i in range(n):
        assert paths[i] == path(i, leaves)
        assert fold_proof(leaves[i], i, n, paths[i]) == root
        assert fold_proof(leaves[i], i, n + 1, paths[i]) in (None, root)  # size: signed, below


def test_leaves_and_nodes_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    root, _ = merkle_tree([a, b])
    assert root == sha256(b"\x01" + a + b).digest() and a == sha256(b"\x00a").digest()
    # An inner node presented as a leaf (its two children as the "canonical bytes") is not one.
    assert leaf_hash(a + b) != root
    assert batch_message(2, root) == b"cellbank.envelope-batch.v1\x00\x00\x00\x00\x02" + root


# --- every envelope verifies alone ----------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_every_envelope_of_a_batch_verifies_alone_and_in_any_order(n: int) -> None:
    evs = events(n)
    signed = batch(LON, evs)
    for data in signed:
        env = envelope_pb2.EventEnvelope.FromString(data)
        assert env.SerializeToString(deterministic=True) == data  # the canonical layout
        assert env.batch_size == n and len(env.signature) == 64
    assert len({envelope_pb2.EventEnvelope.FromString(d).signature for d in signed}) == 1
    for i in random.Random(n).sample(range(n), min(n, 12)):  # alone: nothing cached
        assert verify_envelope(trust(), signed[i]) == evs[i]
    shared = trust()
    order = list(range(n))
    random.Random(n).shuffle(order)
    assert [verify_envelope(shared, signed[i]) for i in order] == [evs[i] for i in order]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.data())
def test_any_member_of_any_batch_verifies_alone(n: int, data: st.DataObject) -> None:
    evs = events(n, salt=n)
    signed = batch(LON, evs)
    i = data.draw(st.integers(0, n - 1))
    assert verify_envelope(trust(), signed[i]) == evs[i]


def test_the_relay_cuts_its_batches_into_signing_batches() -> None:
    evs = events(2 * BATCH_LEAVES + 5)
    signed = sign_bodies(LON, [signing_body(LON, e) for e in evs])
    sizes = [envelope_pb2.EventEnvelope.FromString(d).batch_size for d in signed]
    assert sizes == [BATCH_LEAVES] * (2 * BATCH_LEAVES) + [5] * 5
    shared = trust()
    assert [verify_envelope(shared, d) for d in signed] == evs
    assert len(shared._verified) == 3  # one signature verified per batch


def test_a_reserialized_member_still_verifies() -> None:
    evs = events(7)
    data = batch(LON, evs)[5]
    env = envelope_pb2.EventEnvelope.FromString(data)
    tail = envelope_pb2.EventEnvelope(
        signature=env.signature, batch_index=env.batch_index, batch_size=env.batch_size,
        batch_proof=env.batch_proof,
    ).SerializeToString()  # fmt: skip
    for name in ("signature", "batch_index", "batch_size", "batch_proof"):
        env.ClearField(name)
    assert verify_envelope(trust(), tail + env.SerializeToString()) == evs[5]


# --- what a forger can change --------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64])
def test_changing_any_byte_of_any_envelope_is_refused(n: int) -> None:
    signed = batch(LON, events(n))
    shared = trust()
    for data in signed:
        verify_envelope(shared, data)  # every signature of the batch cached as verified
    for i in sorted({0, n // 2, n - 1}):
        data = signed[i]
        for pos in range(len(data)):
            for flip in (0x01, 0x80):
                forged = data[:pos] + bytes([data[pos] ^ flip]) + data[pos + 1 :]
                assert refused(shared, forged), (n, i, pos, flip)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 300), st.data())
def test_a_changed_index_size_or_proof_is_refused(n: int, data: st.DataObject) -> None:
    signed = batch(LON, events(n, salt=n))
    i = data.draw(st.integers(0, n - 1))
    shared = trust()
    genuine = signed[i]
    verify_envelope(shared, genuine)  # cached: the batch's signature is known good
    env = envelope_pb2.EventEnvelope.FromString(genuine)
    proof = list(env.batch_proof)
    other_index = data.draw(st.integers(0, 2 * n).filter(lambda j: j != i))
    other_size = data.draw(st.integers(0, 2 * n + 2).filter(lambda s: s != n))
    k = data.draw(st.integers(0, len(proof) - 1))
    changes: list[dict[str, object]] = [
        {"batch_index": other_index},
        {"batch_size": other_size},
        {"batch_index": other_index, "batch_size": max(other_index + 1, other_size)},
        {"batch_proof": proof[:-1]},
        {"batch_proof": [*proof, proof[-1]]},
        {"batch_proof": [*proof[:k], bytes(32), *proof[k + 1 :]]},
        {"batch_proof": [*proof[:k], proof[k][:31], *proof[k + 1 :]]},
        {"batch_proof": list(reversed(proof))} if len(proof) > 1 else {"batch_proof": []},
    ]
    for change in changes:
        assert refused(shared, edited(genuine, **change)), change


@pytest.mark.parametrize("n", [2, 3, 8, 64, 100])
def test_a_proof_or_signature_from_another_batch_is_refused(n: int) -> None:
    first, second = batch(LON, events(n, salt=1)), batch(LON, events(n, salt=2))
    shared = trust()
    for data in first + second:
        verify_envelope(shared, data)  # both batches' signatures cached
    for i in range(n):
        theirs = envelope_pb2.EventEnvelope.FromString(second[i])
        assert reason(shared, edited(first[i], batch_proof=theirs.batch_proof)) == "bad signature"
        assert reason(shared, edited(first[i], signature=theirs.signature)) == "bad signature"


def test_a_batch_signed_by_one_sites_key_cannot_speak_for_another_site() -> None:
    lon_events, man_events = events(5, "LON"), events(4, "MAN", salt=3)
    mixed = batch(MAN, [*lon_events, *man_events])  # MAN's key, some envelopes claim LON
    shared = trust()
    for data in mixed[5:]:
        verify_envelope(shared, data)  # the genuine MAN ones (the root's signature is cached)
    for data in mixed[:5]:
        assert reason(shared, data) == "key of MAN signs for LON"
    # Relabelled as signed by a LON key: the key id is in the leaf, and LON-1 never signed it.
    for data in mixed[:5]:
        assert reason(shared, edited(data, signing_key_id="LON-1")) == "bad signature"


def test_the_cache_never_turns_a_failure_into_a_success() -> None:
    lon_events = events(6)
    signed = batch(LON, lon_events)
    env = envelope_pb2.EventEnvelope.FromString(signed[2])
    root = fold_proof(
        leaf_hash(signed[2][: -len(signed[2]) + len(signing_body(LON, lon_events[2]))]),
        2, 6, env.batch_proof,
    )  # fmt: skip
    assert root is not None
    shared = trust()
    at = lon_events[2].recorded_at
    bad = bytes([env.signature[0] ^ 1]) + env.signature[1:]
    for _ in range(2):  # a failure is not remembered: refused every time
        with pytest.raises(Untrusted, match="bad signature"):
            shared.verify_batch_root("LON", "LON-1", 6, root, bad, at)
    shared.verify_batch_root("LON", "LON-1", 6, root, env.signature, at)  # now cached
    refusals = [
        (("LON", "LON-2", 6, root, env.signature, at), "bad signature"),  # the other LON key
        (("LON", "LON-1", 6, root, bad, at), "bad signature"),
        (("LON", "LON-1", 7, root, env.signature, at), "bad signature"),  # another size
        (("LON", "LON-1", 6, sha256(root).digest(), env.signature, at), "bad signature"),
        (("MAN", "LON-1", 6, root, env.signature, at), "key of LON signs for MAN"),
        (("LON", "LON-1", 6, root, env.signature, T0 - timedelta(seconds=1)), "key not valid"),
        (("LON", "NOPE", 6, root, env.signature, at), "unknown key"),
    ]
    for args, words in refusals:
        with pytest.raises(Untrusted, match=words):
            shared.verify_batch_root(*args)
    # The key retired after the batch was verified: a later-recorded claim is refused although
    # the same root and signature are cached as verified.
    retired = shared.retire("LON-1", at)
    retired.verify_batch_root("LON", "LON-1", 6, root, env.signature, at - timedelta(seconds=1))
    with pytest.raises(Untrusted, match="key not valid"):
        retired.verify_batch_root("LON", "LON-1", 6, root, env.signature, at)


def test_the_cache_is_bounded() -> None:
    shared = trust()
    shared.verified_cache_size = 4
    for salt in range(10):
        verify_envelope(shared, batch(LON, events(3, salt=salt))[0])
    assert len(shared._verified) == 4


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 130), st.data())
def test_remembered_nodes_never_change_a_verdict(n: int, data: st.DataObject) -> None:
    """verify_leaf stops at a node of the batch verified before; a list that has seen every
    member must judge any edit of one exactly as a fresh list does (accept or refuse alike)."""
    signed = batch(LON, events(n, salt=n))
    warm = trust()
    for member in signed:
        verify_envelope(warm, member)  # every node of the tree remembered
    assert warm._nodes
    i = data.draw(st.integers(0, n - 1))
    genuine = signed[i]
    proof = list(envelope_pb2.EventEnvelope.FromString(genuine).batch_proof)
    # Siblings a forger can find: every node on the members' paths (all remembered as known).
    nodes = sorted({node for m in signed for node in envelope_pb2.EventEnvelope.FromString(m)
                    .batch_proof})  # fmt: skip
    some_node = st.sampled_from(nodes)
    k = data.draw(st.integers(0, max(0, len(proof) - 1)))
    j = data.draw(st.integers(0, 2 * n))
    change: dict[str, object] = data.draw(
        st.sampled_from(
            [
                {"batch_index": j},
                {"batch_size": data.draw(st.integers(1, 2 * n + 2))},
                {"batch_index": j, "batch_size": j + data.draw(st.integers(1, n))},
                {"batch_proof": proof[:k]},
                {"batch_proof": [*proof, data.draw(some_node)]},
                {"batch_proof": [*proof[:k], data.draw(some_node), *proof[k + 1 :]]},
                {"batch_proof": [*proof[: k + 1], data.draw(some_node), *proof[k + 1 :]]},
                {"batch_index": j, "batch_proof": proof[:k]},
            ]
        )
    )
    forged = edited(genuine, **change)
    assert refused(warm, forged) == refused(trust(), forged), change


def test_remembered_nodes_are_bounded() -> None:
    shared = trust()
    shared.verified_nodes_size = 10
    for salt in range(5):
        for member in batch(LON, events(16, salt=salt)):
            verify_envelope(shared, member)
    assert len(shared._nodes) <= 10
