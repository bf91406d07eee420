"""Site signing keys and the trust list for a network on one machine (`make run`, the tests).

In a deployment each site's key is a secret of that site and the trust list is versioned
configuration shared by all (docker-compose.yml, deploy/k8s); here one folder holds them all:

    <dir>/keys/<SITE>.pem      the site's Ed25519 private key (PKCS#8 PEM, mode 0600)
    <dir>/keys/<SITE>.key-id   its id on the trust list
    <dir>/trust-list.json      every site's public key with its validity period
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.trust import KEY_FILE_ENV, KEY_ID_ENV, TRUST_LIST_ENV, Signer, TrustList

# A new key is valid from a little before it was made: events recorded by a store whose clock
# is slightly behind this machine's must still verify.
CLOCK_SLACK = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    directory: Path

    @property
    def trust_list_file(self) -> Path:
        return self.directory / "trust-list.json"

    def key_file(self, site: str) -> Path:
        return self.directory / "keys" / f"{site}.pem"

    def key_id(self, site: str) -> str:
        return (self.directory / "keys" / f"{site}.key-id").read_text().strip()

    def trust_list(self) -> TrustList:
        return TrustList.from_file(self.trust_list_file)

    def signer(self, site: str) -> Signer:
        return Signer.from_pem(self.key_file(site).read_bytes(), site, self.key_id(site))

    def env(self, site: str | None = None) -> dict[str, str]:
        """The settings a process needs: the trust list, and the site's key if it publishes."""
        env = {TRUST_LIST_ENV: str(self.trust_list_file)}
        if site is not None:
            env[KEY_FILE_ENV] = str(self.key_file(site))
            env[KEY_ID_ENV] = self.key_id(site)
        return env


def ensure_site_keys(directory: Path, sites: Iterable[str]) -> TrustMaterial:
    """A key for every site that has none yet, and a trust list naming them all (a new version
    when a key was added); existing keys are kept."""
    material = TrustMaterial(directory)
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    trust = material.trust_list() if material.trust_list_file.exists() else None
    listed = {k.key_id for k in trust.keys} if trust else set()
    added = []
    for site in dict.fromkeys(sites):
        if material.key_file(site).exists() and material.key_id(site) in listed:
            continue
        signer = Signer.generate(site)
        _write_private(material.key_file(site), signer.private_pem())
        (keys / f"{site}.key-id").write_text(signer.key_id + "\n")
        added.append(signer.trusted_key(datetime.now(UTC) - CLOCK_SLACK))
    if added or trust is None:
        if trust is None:
            trust = TrustList(added)
        else:
            for key in added:
                trust = trust.with_key(key)
        tmp = material.trust_list_file.with_suffix(".tmp")
        tmp.write_text(trust.to_json() + "\n")
        tmp.replace(material.trust_list_file)
    return material


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
