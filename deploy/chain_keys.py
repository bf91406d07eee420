"""Chain keys for a local run and the tests: one secret HMAC key per site service, made once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shared.chain_key import CHAIN_KEY_ENV, ChainKey


@dataclass(frozen=True, slots=True)
class ChainKeys:
    """A folder of key files, `<SITE>.<service>.key` (hex, owner-only), made on first use and
    kept: a service restarted on the same data must chain with the same key."""

    directory: Path

    def file(self, site: str, service: str) -> Path:
        path = self.directory / f"{site}.{service}.key"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_EXCL: two processes making the same key never overwrite one another's.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path
            with os.fdopen(fd, "w") as handle:
                handle.write(ChainKey.generate().hex() + "\n")
        return path

    def key(self, site: str, service: str) -> ChainKey:
        return ChainKey.from_hex(self.file(site, service).read_text(), source=CHAIN_KEY_ENV)

    def env(self, site: str, service: str) -> dict[str, str]:
        """The service's environment entry naming its key file."""
        return {CHAIN_KEY_ENV: str(self.file(site, service))}
