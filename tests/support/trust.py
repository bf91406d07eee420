"""Site keys and the trust list of a test session (and of the benches): made once per process.

Every site a test runs is on the trust list from the start, as in a real network (a consumer
started before another site exists must still verify that site's records): the fixed sites the
tests name and a pool of unused three-letter sites that `fresh_site` hands out, one per call.
The in-process code finds the list through CELLBANK_TRUST_LIST_FILE (set here, inherited by
the worker processes a replay starts)."""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import random
import shutil
import string
import tempfile
from pathlib import Path
from typing import TypedDict

from deploy.trust_keys import TrustMaterial, ensure_site_keys
from shared.trust import TRUST_LIST_ENV, Signer, TrustList

# Sites the tests, benches and tools name (grep the tests for three upper-case letters).
FIXED_SITES = (
    "LON", "MAN", "EDI", "BEN", "RPL", "XYZ", "ZZA", "ABC", "MEM", "BNA", "BNB", "PRA", "PRB", "HRF",
    "HRN", "TLS", "NEW",
)  # fmt: skip
POOL = 400  # fresh sites one session may use (bank_site takes one per site it starts)


@functools.cache
def session_trust() -> TrustMaterial:
    """This process's keys and trust list (a temporary folder, removed at exit)."""
    directory = Path(tempfile.mkdtemp(prefix="cellbank-trust-"))
    atexit.register(shutil.rmtree, directory, True)
    material = ensure_site_keys(directory, (*FIXED_SITES, *_pool()))
    os.environ[TRUST_LIST_ENV] = str(material.trust_list_file)
    return material


@functools.cache
def _pool() -> tuple[str, ...]:
    triples = itertools.product(string.ascii_uppercase, repeat=3)
    everything = {"".join(t) for t in triples} - set(FIXED_SITES)
    return tuple(random.sample(sorted(everything), POOL))


_handed_out: set[str] = set()


def fresh_site() -> str:
    """A site on the trust list no other caller of this process got."""
    session_trust()
    for site in _pool():
        if site not in _handed_out:
            _handed_out.add(site)
            return site
    raise RuntimeError(f"all {POOL} test sites are in use; raise tests.support.trust.POOL")


@functools.cache
def trust_list() -> TrustList:
    return TrustList.from_file(session_trust().trust_list_file)


def signer(site: str) -> Signer:
    return session_trust().signer(site)


class TrustSettings(TypedDict):
    signing_key_file: str
    signing_key_id: str
    trust_list_file: str


def site_trust_settings(site: str) -> TrustSettings:
    """The Settings fields of a site's process: its key, its key id, the trust list."""
    material = session_trust()
    return {
        "signing_key_file": str(material.key_file(site)),
        "signing_key_id": material.key_id(site),
        "trust_list_file": str(material.trust_list_file),
    }
