"""Who may speak for which site, and when: site signing keys and the network's trust list.

Every envelope a site publishes is signed by its relay with the site's Ed25519 key (PyCA
`cryptography`). The trust list — versioned configuration, the same at every site — names each
key, the site it speaks for and the period it is valid in. A consumer applies a record only if
its key is on the list, belongs to the envelope's `site_id`, was valid when the event was
recorded, and the signature verifies over the envelope's canonical bytes (README, "Trust model").

Batch signatures (RFC 6962 / Certificate Transparency style): the relay signs once per batch of
up to BATCH_LEAVES envelopes, and every envelope stays verifiable on its own.
- canonical bytes: the envelope serialized deterministically with fields 19-22 (signature,
  batch_index, batch_size, batch_proof) cleared; signing_key_id (18) is kept, so it is covered;
- leaf = SHA-256(0x00 || canonical), node = SHA-256(0x01 || left || right), the tree shaped as
  RFC 6962 section 2.1 for any size (left subtree: the largest power of two below the size);
- the site key signs BATCH_DOMAIN || batch_size (uint32, big endian) || root, once per batch;
- each envelope carries the signature, its leaf index, the batch size and its audit path (leaf
  to root). A batch of one: size 1, no proof, root = leaf.
The signer appends fields 19-22 after the canonical bytes (deterministic serialization writes
fields in number order), so a verifier finds the canonical bytes as a prefix of what it read and
re-serializes only envelopes laid out otherwise. It folds the proof to the root (RFC 9162
2.1.3.2: the index must be < size and the proof exactly as long as (index, size) needs), applies
the per-envelope checks (key listed, of the envelope's site_id, valid at recorded_at) and then
verifies the root's signature; successes are remembered in a bounded LRU cache on the TrustList,
keyed by (key id, signed message, signature), so a consumer verifies each batch's signature once
and a failure is never cached. The size is in the signed message: the audit path of a leaf can
be the same for two sizes, and the signature pins the one the batch had.

Rotation: add the site's new key (valid_from = now) to the list, switch the site to it, then set
the old key's valid_until; events signed while the old key was valid keep verifying in replays.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

from cellbank.common.v1 import envelope_pb2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.envelope_codec import checked, from_envelope, parse, to_envelope
from shared.events import StoredEvent

SIGNATURE_BYTES = 64
HASH_BYTES = 32
# Envelopes per signature (the relay's batches of up to 2000 are cut into batches of this many).
# Chosen by measurement (tests/bench.py `signing:` row, 2 cores, scale 0.5, 5 rounds, two runs
# each): 16 -> 0.79-0.83 of the unsigned relay, 32 -> 0.89-1.08, 64 -> 0.80-0.83 (per-envelope
# signing: 0.56-0.64). Bigger batches sign less but carry a longer proof (35 bytes a level).
BATCH_LEAVES = 32
MAX_BATCH_LEAVES = 1 << 16  # what a verifier accepts (a proof of at most 16 hashes)
# What the site key signs for a batch: this, the batch size (4 bytes, big endian), the root.
BATCH_DOMAIN = b"cellbank.envelope-batch.v1\x00"
VERIFIED_CACHE_SIZE = 8192  # batch signatures a TrustList remembers as verified
# Tree nodes of verified batches it remembers (_verify_leaf; 300-500 bytes each): a window of
# some 500 batches for a live consumer. A replay reads far more at once (shared/replay.py
# raises both for its workers).
VERIFIED_NODES_SIZE = 1 << 14
# Fields 19-22 as deterministic serialization writes them after the canonical bytes (numbers in
# order; 19-22 are the last fields): tags of signature (19, bytes), batch_index (20, varint),
# batch_size (21, varint), batch_proof (22, bytes, each entry tagged).
_SIGNATURE_TAG = b"\x9a\x01\x40"  # field 19, wire type 2, length 64
_INDEX_TAG = b"\xa0\x01"
_SIZE_TAG = b"\xa8\x01"
_PROOF_TAG = b"\xb2\x01\x20"  # field 22, wire type 2, length 32
_LEAF = b"\x00"
_NODE = b"\x01"
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
        # (key id, signed message, signature) of batch signatures that verified: successes only.
        self._verified: OrderedDict[tuple[str, bytes, bytes], None] = OrderedDict()
        self._verified_lock = threading.Lock()
        self.verified_cache_size = VERIFIED_CACHE_SIZE
        # Tree nodes of verified batches: node → ((key id, size, signature), fn, sn, the rest
        # of the audit path above it). See _verify_leaf.
        self._nodes: dict[bytes, tuple[tuple[str, int, bytes], int, int, tuple[bytes, ...]]] = {}
        self.verified_nodes_size = VERIFIED_NODES_SIZE

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
        public = self.vouch(site_id, key_id, at)
        try:
            public.verify(signature, data)
        except InvalidSignature:
            raise Untrusted("bad signature", site_id=site_id, key_id=key_id) from None

    def vouch(self, site_id: str, key_id: str, at: datetime) -> Ed25519PublicKey:
        """The key's public half if key_id is a key of site_id valid at `at`; else Untrusted."""
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
        return public

    def verify_batch_root(
        self, site_id: str, key_id: str, size: int, root: bytes, signature: bytes, at: datetime
    ) -> None:
        """Raises Untrusted unless key_id is a key of site_id valid at `at` (checked every time)
        and `signature` is its signature of the batch (size, root). A signature that verified
        is remembered (bounded LRU), so each batch's is verified once; failures never are."""
        self._verify_root(self.vouch(site_id, key_id, at), site_id, key_id, size, root, signature)

    def _verify_root(
        self,
        public: Ed25519PublicKey,
        site_id: str,
        key_id: str,
        size: int,
        root: bytes,
        signature: bytes,
    ) -> None:
        message = batch_message(size, root)
        entry = (key_id, message, signature)
        with self._verified_lock:
            if entry in self._verified:
                self._verified.move_to_end(entry)
                return
        try:
            public.verify(signature, message)  # releases the GIL
        except InvalidSignature:
            raise Untrusted("bad signature", site_id=site_id, key_id=key_id) from None
        with self._verified_lock:
            self._verified[entry] = None
            while len(self._verified) > self.verified_cache_size:
                self._verified.popitem(last=False)

    def _verify_leaf(
        self,
        site_id: str,
        key_id: str,
        leaf: bytes,
        index: int,
        size: int,
        proof: Sequence[bytes],
        signature: bytes,
    ) -> None:
        """Raises Untrusted unless `proof` leads `leaf` (index `index` of a batch of `size`) to
        a root that key `key_id` signed with `signature`: fold_proof, then verify_batch_root's
        check, with the same verdict on every input. The caller has vouched for the key (of
        the envelope's site, valid when it was recorded): verify_envelope.

        A consumer sees every member of a batch, and their audit paths meet: a fold stops at the
        first node already verified as part of the same batch (key id, size, signature) at the
        same place (fn, sn) with the same rest of the path above it. From there the fold would
        repeat, step for step, one that reached the verified root, so the verdict is the same
        (a changed index, size, sibling or path length makes one of those differ: folded out).
        About 2 hashes a member instead of log2(size). Only successes are remembered."""
        nodes, batch, path = self._nodes, (key_id, size, signature), tuple(proof)
        node, sn = leaf, size - 1
        walked: list[tuple[bytes, int, int, int]] = []  # (node, fn, sn, step) folded here
        known = False
        try:
            for step, (node, fn, sn) in enumerate(_fold_steps(leaf, index, size, proof)):
                seen = nodes.get(node)
                if seen is not None and seen == (batch, fn, sn, path[step + 1 :]):
                    known = True
                    break
                walked.append((node, fn, sn, step))
        except ValueError:
            raise Untrusted("malformed proof", site_id=site_id, key_id=key_id) from None
        if not known:
            if sn != 0:
                raise Untrusted("malformed proof", site_id=site_id, key_id=key_id)
            self._verify_root(self._by_id[key_id][1], site_id, key_id, size, node, signature)
        if len(nodes) + len(walked) > self.verified_nodes_size:
            nodes.clear()
        for at, f, s, step in walked:
            nodes[at] = (batch, f, s, path[step + 1 :])

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
    """The canonical bytes a leaf hashes: the envelope with the key id, fields 19-22 empty."""
    env = to_envelope(event)
    env.signing_key_id = signer.key_id
    return env.SerializeToString(deterministic=True)


def batch_message(size: int, root: bytes) -> bytes:
    """What the site key signs for a batch of `size` envelopes whose Merkle root is `root`."""
    return BATCH_DOMAIN + size.to_bytes(4, "big") + root


def leaf_hash(body: bytes) -> bytes:
    return sha256(_LEAF + body).digest()


def merkle_tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """(root, audit path of every leaf) of RFC 6962's tree over leaf hashes (at least one)."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    paths: list[list[bytes]] = [[] for _ in leaves]

    def subtree(lo: int, hi: int) -> bytes:  # MTH(D[lo:hi]); appends siblings, leaf to root
        if hi - lo == 1:
            return leaves[lo]
        k = 1 << ((hi - lo - 1).bit_length() - 1)  # the largest power of two < hi - lo
        left, right = subtree(lo, lo + k), subtree(lo + k, hi)
        for i in range(lo, lo + k):
            paths[i].append(right)
        for i in range(lo + k, hi):
            paths[i].append(left)
        return sha256(_NODE + left + right).digest()

    return subtree(0, len(leaves)), paths


def fold_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root that `proof` (leaf to root) leads to from leaf `index` of a tree of `size`
    leaves (RFC 9162 2.1.3.2), or None if it is no audit path of (index, size)."""
    node, sn = leaf, size - 1
    try:
        for reached in _fold_steps(leaf, index, size, proof):
            node, _, sn = reached
    except ValueError:
        return None
    return node if sn == 0 else None


def _fold_steps(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes]
) -> Iterator[tuple[bytes, int, int]]:
    """RFC 9162 2.1.3.2's fold, a step at a time: after each sibling, the node reached and
    (fn, sn) then. ValueError as soon as `proof` cannot be an audit path of (index, size); the
    path was exactly long enough when sn is 0 after the last step."""
    if not 0 <= index < size or len(proof) > 64:
        raise ValueError("index, size or proof length out of range")
    fn, sn, node = index, size - 1, leaf
    for sibling in proof:
        if sn == 0 or len(sibling) != HASH_BYTES:
            raise ValueError("a sibling too many, or not a hash")
        if fn & 1 or fn == sn:
            node = sha256(_NODE + sibling + node).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            node = sha256(_NODE + node + sibling).digest()
        fn >>= 1
        sn >>= 1
        yield node, fn, sn


def seal(
    body: bytes, signature: bytes, index: int = 0, size: int = 1, proof: Sequence[bytes] = ()
) -> bytes:
    """Canonical bytes + fields 19-22 = the signed envelope's (deterministic) serialization."""
    return body + _tail(signature, index, size, proof)


def sign_batch(signer: Signer, bodies: Sequence[bytes]) -> list[bytes]:
    """One batch: its canonical bodies, sealed with one signature of their Merkle root."""
    size = len(bodies)
    if size == 1:  # root = leaf, no proof
        body = bodies[0]
        signature = signer.sign(batch_message(1, leaf_hash(body)))
        return [body + _tail(signature, 0, 1, ())]
    root, paths = merkle_tree([sha256(_LEAF + b).digest() for b in bodies])
    signature = signer.sign(batch_message(size, root))
    head = _SIGNATURE_TAG + signature
    size_field = _SIZE_TAG + _varint(size)
    tag, join = _PROOF_TAG, b"".join
    return [
        join((body, head, _INDEX_TAG + _varint(i) if i else b"", size_field,
              *[tag + node for node in path]))
        for i, (body, path) in enumerate(zip(bodies, paths, strict=True))
    ]  # fmt: skip


def sign_bodies(
    signer: Signer, bodies: Sequence[bytes], batch_leaves: int = BATCH_LEAVES
) -> list[bytes]:
    """Sign many canonical bodies, batch_leaves to a signature; the signed envelopes, in order.
    PyCA releases the GIL while signing, so this is the part to run in a worker thread."""
    if not 1 <= batch_leaves <= MAX_BATCH_LEAVES:
        raise ValueError(f"batch_leaves must be 1..{MAX_BATCH_LEAVES}")
    out: list[bytes] = []
    for i in range(0, len(bodies), batch_leaves):
        out.extend(sign_batch(signer, bodies[i : i + batch_leaves]))
    return out


def sign_event(signer: Signer, event: StoredEvent) -> bytes:
    """The event's envelope, signed alone (a batch of one)."""
    return sign_batch(signer, [signing_body(signer, event)])[0]


def sign_envelope(signer: Signer, envelope_bytes: bytes) -> bytes:
    """(Re)sign envelope bytes with the signer's key (a batch of one)."""
    env = parse(envelope_bytes)
    env.signing_key_id = signer.key_id
    _clear_batch_fields(env)
    return sign_batch(signer, [env.SerializeToString(deterministic=True)])[0]


def verify_envelope(trust: TrustList, data: bytes) -> StoredEvent:
    """Decode and verify a signed envelope (alone: its proof leads to its batch's root).

    Raises ValueError when the bytes are no valid envelope and Untrusted when the trust list does
    not vouch for it (unsigned, unknown key, another site's key, key not valid then, malformed
    signature or proof, bad signature).
    """
    env = checked(parse(data))
    event = from_envelope(env)
    site_id, key_id, signature = env.site_id, env.signing_key_id, env.signature
    if not signature:
        raise Untrusted("unsigned", site_id=site_id)
    if len(signature) != SIGNATURE_BYTES:
        raise Untrusted("malformed signature", site_id=site_id, key_id=key_id)
    trust.vouch(site_id, key_id, event.recorded_at)  # the cheap refusals first
    index, size, proof = env.batch_index, env.batch_size, tuple(env.batch_proof)  # read once
    if not 0 < size <= MAX_BATCH_LEAVES:
        raise Untrusted("malformed proof", site_id=site_id, key_id=key_id)
    tail = _tail(signature, index, size, proof)
    if data.endswith(tail):
        # The signer's layout: fields 19-22 appended to the canonical bytes. parse(data) equals
        # parse(body) but for those fields, so the leaf's bytes are exactly what was parsed.
        body = data[: -len(tail)]
    else:
        unsigned = envelope_pb2.EventEnvelope()
        unsigned.CopyFrom(env)
        _clear_batch_fields(unsigned)
        body = unsigned.SerializeToString(deterministic=True)
    trust._verify_leaf(site_id, key_id, leaf_hash(body), index, size, proof, signature)
    return event


def envelope_signer(data: bytes) -> tuple[str, str]:
    """(site_id, signing_key_id) as the bytes claim them, for reports; ('', '') if unreadable."""
    try:
        env = parse(data)
    except ValueError:
        return "", ""
    return env.site_id, env.signing_key_id


# --- helpers -------------------------------------------------------------------------------


def _tail(signature: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Fields 19-22 as deterministic serialization writes them (proto3: zeros left out)."""
    parts = [_SIGNATURE_TAG, signature] if len(signature) == SIGNATURE_BYTES else []
    if signature and len(signature) != SIGNATURE_BYTES:
        parts = [b"\x9a\x01", _varint(len(signature)), signature]
    if index:
        parts += (_INDEX_TAG, _varint(index))
    if size:
        parts += (_SIZE_TAG, _varint(size))
    if not proof:
        return b"".join(parts)
    if all(len(node) == HASH_BYTES for node in proof):  # the usual case: one join
        parts += (_PROOF_TAG, _PROOF_TAG.join(proof))
        return b"".join(parts)
    for node in proof:
        if len(node) == HASH_BYTES:
            parts += (_PROOF_TAG, node)
        else:
            parts += (b"\xb2\x01", _varint(len(node)), node)
    return b"".join(parts)


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def _clear_batch_fields(env: envelope_pb2.EventEnvelope) -> None:
    for name in ("signature", "batch_index", "batch_size", "batch_proof"):
        env.ClearField(name)


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
