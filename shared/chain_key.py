"""The secret key a service store's audit hash chain is keyed with, and where it comes from."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import InvalidArgument

CHAIN_KEY_ENV = "CELLBANK_CHAIN_KEY_FILE"  # a file holding the key in hex (a mounted Secret)
KEY_BYTES = 32


class MissingChainKey(InvalidArgument):
    """A store was asked to append or verify without its chain key."""

    def __init__(self) -> None:
        super().__init__(
            CHAIN_KEY_ENV,
            "is required: the event store's hash chain is keyed (HMAC-SHA256 with the store's"
            " secret key); point it at the service's key file (deploy/chain_keys.py makes them)",
        )


@dataclass(frozen=True, slots=True)
class ChainKey:
    """One store's HMAC key: whoever can write the database but lacks it cannot re-hash."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            raise InvalidArgument(CHAIN_KEY_ENV, f"the key must be at least {KEY_BYTES} bytes")

    @classmethod
    def generate(cls) -> ChainKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_hex(cls, text: str, source: str = CHAIN_KEY_ENV) -> ChainKey:
        try:
            raw = bytes.fromhex(text.strip())
        except ValueError:
            raise InvalidArgument(source, "must hold the chain key in hex") from None
        if len(raw) < KEY_BYTES:
            raise InvalidArgument(source, f"the key must be at least {KEY_BYTES} bytes")
        return cls(raw)

    def hex(self) -> str:
        return self.secret.hex()


def chain_key_from_env(env: Mapping[str, str] | None = None) -> ChainKey | None:
    """The key in the file $CELLBANK_CHAIN_KEY_FILE names; None when it is not set (a process
    that only reads); an unreadable or malformed file names the variable."""
    env = os.environ if env is None else env
    path = env.get(CHAIN_KEY_ENV, "").strip()
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise InvalidArgument(CHAIN_KEY_ENV, f"cannot be read: {exc}") from None
    return ChainKey.from_hex(text)
