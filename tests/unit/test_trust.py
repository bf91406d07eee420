"""Site keys and the trust list: what a consumer accepts, and what it refuses with which reason."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cellbank.common.v1 import envelope_pb2

from deploy.trust_keys import ensure_site_keys
from shared.envelope_codec import encode
from shared.events import StoredEvent
from shared.trust import (
    Signer,
    TrustConfigError,
    TrustList,
    Untrusted,
    seal,
    sign_bodies,
    sign_envelope,
    sign_event,
    signing_body,
    verify_envelope,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(site: str = "LON", *, recorded_at: datetime = T0 + timedelta(days=10)) -> StoredEvent:
    return StoredEvent(
        position=7, event_id="0190f0f0-0000-7000-8000-000000000001",
        event_type="cellbank.storage.v1.UnitStored", schema_version=1, aggregate_type="unit",
        aggregate_id="W1234 26 000001", aggregate_version=1, site_id=site,
        occurred_at=recorded_at, recorded_at=recorded_at, actor="alice", reason="stored",
        correlation_id="c", causation_id="", payload=b"\x0a\x03abc", prev_hash=b"\x00" * 32,
        hash=b"\x01" * 32,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lon() -> Signer:
    return Signer.generate("LON", "LON-1")


@pytest.fixture(scope="module")
def man() -> Signer:
    return Signer.generate("MAN", "MAN-1")


@pytest.fixture(scope="module")
def trust(lon: Signer, man: Signer) -> TrustList:
    return TrustList([lon.trusted_key(T0), man.trusted_key(T0)])


def reason(trust: TrustList, data: bytes) -> str:
    with pytest.raises(Untrusted) as caught:
        verify_envelope(trust, data)
    return caught.value.reason


def test_a_signed_envelope_verifies_and_decodes_to_the_event(lon: Signer, trust: TrustList) -> None:
    e = event()
    assert verify_envelope(trust, sign_event(lon, e)) == e


def test_signed_bytes_are_the_deterministic_serialization(lon: Signer) -> None:
    data = sign_event(lon, event())
    env = envelope_pb2.EventEnvelope.FromString(data)
    assert env.signing_key_id == "LON-1" and len(env.signature) == 64
    assert env.SerializeToString(deterministic=True) == data
    assert sign_bodies(lon, [signing_body(lon, event())]) == [data]  # Ed25519 is deterministic


def test_a_reserialized_envelope_still_verifies(lon: Signer, trust: TrustList) -> None:
    env = envelope_pb2.EventEnvelope.FromString(sign_event(lon, event()))
    # Fields in another order than the signer wrote them (signature first): still the same
    # message, verified over its canonical form.
    sig = envelope_pb2.EventEnvelope(signature=env.signature).SerializeToString()
    env.ClearField("signature")
    assert verify_envelope(trust, sig + env.SerializeToString()) == event()


def test_unsigned_is_refused(trust: TrustList) -> None:
    assert reason(trust, encode(event())) == "unsigned"


def test_an_unknown_key_is_refused(trust: TrustList) -> None:
    stranger = Signer.generate("LON", "LON-9")
    assert reason(trust, sign_event(stranger, event())) == "unknown key"


def test_a_valid_key_of_another_site_is_refused(man: Signer, trust: TrustList) -> None:
    # MAN's genuine key, on an envelope claiming to be LON's.
    assert reason(trust, sign_event(man, event("LON"))) == "key of MAN signs for LON"


def test_an_altered_envelope_is_refused(lon: Signer, trust: TrustList) -> None:
    env = envelope_pb2.EventEnvelope.FromString(sign_event(lon, event()))
    env.actor = "mallory"
    assert reason(trust, env.SerializeToString(deterministic=True)) == "bad signature"


def test_a_stolen_id_with_another_key_is_refused(trust: TrustList) -> None:
    impostor = Signer.generate("LON", "LON-1")  # same id, not the listed key
    assert reason(trust, sign_event(impostor, event())) == "bad signature"


def test_appended_fields_after_the_signature_are_refused(lon: Signer, trust: TrustList) -> None:
    data = sign_event(lon, event())
    extra = envelope_pb2.EventEnvelope(actor="mallory").SerializeToString()
    assert reason(trust, data + extra) == "bad signature"


def test_an_envelope_signed_without_a_batch_is_refused(lon: Signer, trust: TrustList) -> None:
    body = signing_body(lon, event())  # the earlier layout: Ed25519 over the canonical bytes
    assert reason(trust, seal(body, lon.sign(body), size=0)) == "malformed proof"


def test_a_malformed_signature_is_refused(lon: Signer, trust: TrustList) -> None:
    env = envelope_pb2.EventEnvelope.FromString(sign_event(lon, event()))
    env.signature = b"\x00" * 10
    assert reason(trust, env.SerializeToString()) == "malformed signature"


def test_garbage_is_a_value_error_not_untrusted(trust: TrustList) -> None:
    with pytest.raises(ValueError):
        verify_envelope(trust, b"\xff\xff\xff")


def test_rotation_keeps_old_events_verifiable_and_refuses_the_retired_key_later(
    lon: Signer, man: Signer
) -> None:
    rotated_at = T0 + timedelta(days=30)
    new = Signer.generate("LON", "LON-2")
    trust = TrustList([lon.trusted_key(T0), man.trusted_key(T0)])
    trust = trust.with_key(new.trusted_key(rotated_at)).retire("LON-1", rotated_at)
    assert trust.version == 3
    before = event(recorded_at=rotated_at - timedelta(seconds=1))
    after = event(recorded_at=rotated_at + timedelta(seconds=1))
    assert verify_envelope(trust, sign_event(lon, before)) == before
    assert verify_envelope(trust, sign_event(new, after)) == after
    assert reason(trust, sign_event(lon, after)).startswith("key not valid at ")
    assert reason(trust, sign_event(new, before)).startswith("key not valid at ")


def test_the_trust_list_round_trips_as_json(lon: Signer, trust: TrustList) -> None:
    retired = trust.retire("MAN-1", T0 + timedelta(days=1))
    again = TrustList.from_json(retired.to_json())
    assert again.version == retired.version and again.keys == retired.keys


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ("[]", '"keys" list'),
        ('{"keys": [{"site": "LON"}]}', "keys[0]: key_id is required"),
        ('{"keys": [{"key_id": "a", "site": "LON", "public_key": "AAAA",'
         ' "valid_from": "2026-01-01T00:00:00Z"}]}', "32 bytes"),
        ('{"keys": [{"key_id": "a", "site": "LON", "public_key": "x",'
         ' "valid_from": "2026-01-01T00:00:00"}]}', "keys[0]"),
        ('{"version": "2", "keys": []}', "version must be an integer"),
    ],
)  # fmt: skip
def test_a_bad_trust_list_names_the_field(doc: str, names: str) -> None:
    with pytest.raises(TrustConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        TrustList.from_json(doc)


def test_a_key_listed_twice_or_ending_before_it_starts_is_refused(lon: Signer) -> None:
    with pytest.raises(TrustConfigError, match="listed twice"):
        TrustList([lon.trusted_key(T0), lon.trusted_key(T0)])
    with pytest.raises(TrustConfigError, match="valid_until must be after"):
        TrustList([lon.trusted_key(T0, T0)])


def test_signer_from_env_names_the_missing_setting(tmp_path: Path) -> None:
    with pytest.raises(TrustConfigError, match="CELLBANK_SIGNING_KEY_FILE is required"):
        Signer.from_env("LON", {})
    with pytest.raises(TrustConfigError, match="CELLBANK_SIGNING_KEY_ID is required"):
        Signer.from_env("LON", {"CELLBANK_SIGNING_KEY_FILE": str(tmp_path / "k.pem")})
    bad = tmp_path / "bad.pem"
    bad.write_text("nope")
    with pytest.raises(TrustConfigError, match="not an unencrypted PEM key"):
        Signer.from_env(
            "LON", {"CELLBANK_SIGNING_KEY_FILE": str(bad), "CELLBANK_SIGNING_KEY_ID": "k"}
        )
    with pytest.raises(TrustConfigError, match="CELLBANK_TRUST_LIST_FILE is required"):
        TrustList.from_env({})


def test_resigning_replaces_the_signer(lon: Signer, man: Signer, trust: TrustList) -> None:
    resigned = sign_envelope(lon, sign_event(man, event("MAN")))
    assert reason(trust, resigned) == "key of LON signs for MAN"
    assert verify_envelope(trust, sign_envelope(man, sign_event(lon, event("MAN")))) == event("MAN")
    sealed = seal(b"", b"s" * 64, 3, 5, [b"p" * 32])  # fields 19-22, as protobuf writes them
    env = envelope_pb2.EventEnvelope(
        signature=b"s" * 64, batch_index=3, batch_size=5, batch_proof=[b"p" * 32]
    )
    assert sealed == env.SerializeToString(deterministic=True)


def test_local_key_material_is_made_once_and_private(tmp_path: Path) -> None:
    first = ensure_site_keys(tmp_path, ["LON", "MAN"])
    key_id = first.key_id("LON")
    assert stat.S_IMODE(first.key_file("LON").stat().st_mode) == 0o600
    again = ensure_site_keys(tmp_path, ["LON", "MAN", "EDI"])
    assert again.key_id("LON") == key_id  # kept
    trust = again.trust_list()
    assert trust.sites() == {"LON", "MAN", "EDI"} and trust.version == 2
    signer = again.signer("EDI")
    e = replace(event("EDI"), recorded_at=datetime.now(UTC))
    assert verify_envelope(trust, sign_event(signer, e)) == e
    env = again.env("EDI")
    assert env["CELLBANK_SIGNING_KEY_ID"] == signer.key_id
    assert json.loads(Path(env["CELLBANK_TRUST_LIST_FILE"]).read_text())["version"] == 2
    assert Signer.from_env("EDI", env).key_id == signer.key_id
