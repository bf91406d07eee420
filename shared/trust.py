"""Who may speak for which site, and when: site signing keys and the network's trust list.

Every envelope a site publishes is signed by its relay with the site's Ed25519 key (PyCA
`cryptography`). The trust list — versioned configuration, the same at every site — names each
key, the site it speaks for and the period it is valid in. A consumer applies a record only if
its key is on the list, belongs to the envelope's `site_id`, was valid when the event was
recorded, and the signature verifies over the envelope's canonical bytes (README, "Trust model").

Rotation: add the site's new key (valid_from = now) to the list, switch the site to it, then set
the old key's valid_until; events signed while the old key was valid keep verifying in replays.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from cellbank.common.v1 import envelope_pb2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.envelope_codec import checked, from_envelope, parse, to_envelope
from shared.events import StoredEvent

SIGNATURE_BYTES = 64
# Field 19 (`signature`), wire type 2, length 64: what the signer appends to the canonical bytes.
# Deterministic serialization writes fields in number order and 19 is the last, so canonical
# bytes + this tag + the signature are exactly the signed envelope's serialization.
_SIGNATURE_TAG = b"\x9a\x01\x40"
_KEY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SITE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MAX_TRUST_LIST_BYTES = 1_000_000

KEY_FILE_ENV = "CELLBANK_SIGNING_KEY_FILE"
KEY_ID_ENV = "CELLBANK_SIGNING_KEY_ID"
TRUST_LIST_ENV = "CELLBANK_TRUST_LIST_FILE"


class Untrusted(Exception):
    """A record the trust list does not vouch for; `reason` is short and names no secret."""

    def __init__(self, reason: str, *, site_id: str = "", key_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.site_id = site_id
        self.key_id = key_id


class TrustConfigError(ValueError):
    """A key file, key id or trust list that cannot be used; names the setting and the rule."""


# --- keys ----------------------------------------------------------------------------------


class Signer:
    """One site's private signing key (held by that site's relays and anchor publishers)."""

    def __init__(self, private_key: Ed25519PrivateKey, site: str, key_id: str) -> None:
        _check_site(site, "site")
        _check_key_id(key_id, KEY_ID_ENV)
        self._key = private_key
        self.site = site
        self.key_id = key_id

    def __repr__(self) -> str:  # never the key
        return f"Signer(site={self.site!r}, key_id={self.key_id!r})"

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def trusted_key(self, valid_from: datetime, valid_until: datetime | None = None) -> TrustedKey:
        """This key's entry for the trust list."""
        return TrustedKey(self.key_id, self.site, self.public_bytes(), valid_from, valid_until)

    @classmethod
    def generate(cls, site: str, key_id: str | None = None) -> Signer:
        key_id = key_id or f"{site}-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        return cls(Ed25519PrivateKey.generate(), site, key_id)

    @classmethod
    def from_pem(cls, pem: bytes, site: str, key_id: str) -> Signer:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise TrustConfigError(f"{KEY_FILE_ENV}: not an unencrypted PEM key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise TrustConfigError(f"{KEY_FILE_ENV}: must hold an Ed25519 private key")
        return cls(key, site, key_id)

    @classmethod
    def from_env(cls, site: str, env: Mapping[str, str] | None = None) -> Signer:
        """The site's key from CELLBANK_SIGNING_KEY_FILE (PKCS#8 PEM) and _KEY_ID."""
        env = os.environ if env is None else env
        path = env.get(KEY_FILE_ENV, "").strip()
        key_id = env.get(KEY_ID_ENV, "").strip()
        if not path:
            raise TrustConfigError(
                f"{KEY_FILE_ENV} is required: the site's Ed25519 signing key (PEM) that signs "
                "every envelope it publishes"
            )
        if not key_id:
            raise TrustConfigError(
                f"{KEY_ID_ENV} is required: the signing key's id on the trust list"
            )
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise TrustConfigError(f"{KEY_FILE_ENV}: cannot read {path}: {exc.strerror}") from None
        return cls.from_pem(pem, site, key_id)


@dataclass(frozen=True, slots=True)
class TrustedKey:
    key_id: str
    site: str
    public_key: bytes  # raw 32 bytes
    valid_from: datetime
    valid_until: datetime | None = None  # None: no end set yet

    def valid_at(self, at: datetime) -> bool:
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)

    def as_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "site": self.site,
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "valid_from": _iso(self.valid_from),
            "valid_until": None if self.valid_until is None else _iso(self.valid_until),
        }


class TrustList:
    """The network's keys: key id → site, public key, validity. Versioned configuration."""

    def __init__(self, keys: Iterable[TrustedKey] = (), *, version: int = 1) -> None:
        if version < 1:
            raise TrustConfigError("trust list: version must be >= 1")
        self.version = version
        self.keys: tuple[TrustedKey, ...] = tuple(keys)
        self._by_id: dict[str, tuple[TrustedKey, Ed25519PublicKey]] = {}
        for key in self.keys:
            _check_key_id(key.key_id, "trust list: key_id")
            _check_site(key.site, f"trust list: key {key.key_id}: site")
            if key.key_id in self._by_id:
                raise TrustConfigError(f"trust list: key_id {key.key_id} is listed twice")
            if len(key.public_key) != 32:
                raise TrustConfigError(
                    f"trust list: key {key.key_id}: public_key must be 32 bytes (raw Ed25519)"
                )
            if key.valid_until is not None and key.valid_until <= key.valid_from:
                raise TrustConfigError(
                    f"trust list: key {key.key_id}: valid_until must be after valid_from"
                )
            public = Ed25519PublicKey.from_public_bytes(key.public_key)
            self._by_id[key.key_id] = (key, public)

    def __repr__(self) -> str:
        return f"TrustList(version={self.version}, keys={len(self.keys)})"

    def key(self, key_id: str) -> TrustedKey | None:
        found = self._by_id.get(key_id)
        return found[0] if found else None

    def sites(self) -> frozenset[str]:
        return frozenset(k.site for k in self.keys)

    def verify(
        self, site_id: str, key_id: str, data: bytes, signature: bytes, at: datetime
    ) -> None:
        """Raises Untrusted unless key_id is a key of site_id, valid at `at`, and signed data."""
        if not key_id:
            raise Untrusted("unsigned", site_id=site_id)
        found = self._by_id.get(key_id)
        if found is None:
            raise Untrusted("unknown key", site_id=site_id, key_id=key_id)
        key, public = found
        if key.site != site_id:
            raise Untrusted(
                f"key of {key.site} signs for {site_id}", site_id=site_id, key_id=key_id
            )
        if not key.valid_at(at):
            raise Untrusted(f"key not valid at {_iso(at)}", site_id=site_id, key_id=key_id)
        try:
            public.verify(signature, data)
        except InvalidSignature:
            raise Untrusted("bad signature", site_id=site_id, key_id=key_id) from None

    # --- changes (each a new version) ---

    def with_key(self, key: TrustedKey) -> TrustList:
        return TrustList((*self.keys, key), version=self.version + 1)

    def retire(self, key_id: str, at: datetime) -> TrustList:
        """The key stops being valid at `at`; what it signed before stays verifiable."""
        if key_id not in self._by_id:
            raise TrustConfigError(f"trust list: no key {key_id} to retire")
        keys = [replace(k, valid_until=at) if k.key_id == key_id else k for k in self.keys]
        return TrustList(keys, version=self.version + 1)

    # --- as configuration ---

    def to_json(self) -> str:
        return json.dumps(
            {"version": self.version, "keys": [k.as_json() for k in self.keys]}, indent=2
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TrustList:
        if len(text) > MAX_TRUST_LIST_BYTES:
            raise TrustConfigError(f"trust list: larger than {MAX_TRUST_LIST_BYTES} bytes")
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise TrustConfigError(f"trust list: not JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise TrustConfigError('trust list: must be an object with a "keys" list')
        version = doc.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise TrustConfigError("trust list: version must be an integer")
        return cls((_key_from_json(k, i) for i, k in enumerate(doc["keys"])), version=version)

    @classmethod
    def from_file(cls, path: str | Path) -> TrustList:
        try:
            return cls.from_json(Path(path).read_bytes())
        except OSError as exc:
            raise TrustConfigError(
                f"{TRUST_LIST_ENV}: cannot read {path}: {exc.strerror}"
            ) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrustList:
        env = os.environ if env is None else env
        path = env.get(TRUST_LIST_ENV, "").strip()
        if not path:
            raise TrustConfigError(
                f"{TRUST_LIST_ENV} is required: the network's trust list (JSON) every consumer "
                "checks envelope signatures against"
            )
        return cls.from_file(path)


# --- envelopes -----------------------------------------------------------------------------


def signing_body(signer: Signer, event: StoredEvent) -> bytes:
    """The canonical bytes the signature covers: the envelope with the key id, no signature."""
    env = to_envelope(event)
    env.signing_key_id = signer.key_id
    return env.SerializeToString(deterministic=True)


def seal(body: bytes, signature: bytes) -> bytes:
    """Canonical bytes + signature = the signed envelope's serialization."""
    return body + _SIGNATURE_TAG + signature


def sign_bodies(signer: Signer, bodies: Sequence[bytes]) -> list[bytes]:
    """Sign many canonical bodies; PyCA releases the GIL while signing, so this is the part to
    run in a worker thread."""
    sign = signer.sign
    return [body + _SIGNATURE_TAG + sign(body) for body in bodies]


def sign_event(signer: Signer, event: StoredEvent) -> bytes:
    body = signing_body(signer, event)
    return seal(body, signer.sign(body))


def sign_envelope(signer: Signer, envelope_bytes: bytes) -> bytes:
    """(Re)sign envelope bytes with the signer's key."""
    env = parse(envelope_bytes)
    env.signing_key_id = signer.key_id
    env.ClearField("signature")
    body = env.SerializeToString(deterministic=True)
    return seal(body, signer.sign(body))


def verify_envelope(trust: TrustList, data: bytes) -> StoredEvent:
    """Decode and verify a signed envelope.

    Raises ValueError when the bytes are no valid envelope and Untrusted when the trust list does
    not vouch for it (unsigned, unknown key, another site's key, key not valid then, bad
    signature).
    """
    env = checked(parse(data))
    event = from_envelope(env)
    signature = env.signature
    if not signature:
        raise Untrusted("unsigned", site_id=env.site_id)
    if len(signature) != SIGNATURE_BYTES:
        raise Untrusted("malformed signature", site_id=env.site_id, key_id=env.signing_key_id)
    tail = _SIGNATURE_TAG + signature
    if data.endswith(tail):
        # The signer's layout: the signature was appended to the canonical bytes. parse(data)
        # equals parse(body) but for field 19, so the signed bytes are exactly what was parsed.
        body = data[: -len(tail)]
    else:
        unsigned = envelope_pb2.EventEnvelope()
        unsigned.CopyFrom(env)
        unsigned.ClearField("signature")
        body = unsigned.SerializeToString(deterministic=True)
    trust.verify(env.site_id, env.signing_key_id, body, signature, event.recorded_at)
    return event


def envelope_signer(data: bytes) -> tuple[str, str]:
    """(site_id, signing_key_id) as the bytes claim them, for reports; ('', '') if unreadable."""
    try:
        env = parse(data)
    except ValueError:
        return "", ""
    return env.site_id, env.signing_key_id


# --- helpers -------------------------------------------------------------------------------


def _key_from_json(raw: object, index: int) -> TrustedKey:
    where = f"trust list: keys[{index}]"
    if not isinstance(raw, dict):
        raise TrustConfigError(f"{where}: must be an object")
    try:
        key_id, site = str(raw["key_id"]), str(raw["site"])
        public = base64.b64decode(str(raw["public_key"]), validate=True)
        valid_from = _parse_time(raw["valid_from"], f"{where}.valid_from")
        until = raw.get("valid_until")
        valid_until = None if until in (None, "") else _parse_time(until, f"{where}.valid_until")
    except KeyError as exc:
        raise TrustConfigError(f"{where}: {exc.args[0]} is required") from None
    except (ValueError, TypeError) as exc:
        raise TrustConfigError(f"{where}: {exc}") from None
    return TrustedKey(key_id, site, public, valid_from, valid_until)


def _parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise TrustConfigError(f"{where}: must be an ISO 8601 time string")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise TrustConfigError(f"{where}: must name its time zone (e.g. 2026-01-01T00:00:00Z)")
    return parsed.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _check_key_id(key_id: str, where: str) -> None:
    if not _KEY_ID.match(key_id):
        raise TrustConfigError(f"{where}: 1-64 letters, digits, '.', '_', ':' or '-'")


def _check_site(site: str, where: str) -> None:
    if not _SITE.match(site):
        raise TrustConfigError(f"{where}: 1-16 letters, digits, '_' or '-'")
