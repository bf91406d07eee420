"""Reads an IPD-IMGT/HLA release directory into an `HlaReference`, caching what it derives."""

# The release's licence forbids redistributing its data or tables derived from it, so nothing
# here is committed: the directory is given at run time (CELLBANK_HLA_REFERENCE) and the derived
# classes are cached under `.cellbank/` keyed by the files' SHA-256 checksums.

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from services.matching.domain.kir_ligand import (
    CLASS_I_LOCI,
    LEADER_LENGTH,
    LIGAND_CLASSES,
    RULES_VERSION,
    HlaReference,
    classify_release,
    parse_name,
)

log = logging.getLogger(__name__)
# Bump with any change to how this module or the alignment derives classes: it keys the cache.
DERIVATION_VERSION = 1

PROTEIN_FILES = tuple(f"{locus}_prot.fasta" for locus in CLASS_I_LOCI)
REQUIRED_FILES = (
    *PROTEIN_FILES,
    "Allelelist.txt",
    "Deleted_alleles.txt",
    "hla_nom_g.txt",
    "hla_nom_p.txt",
    "release_version.txt",
)
DEFAULT_CACHE = Path(__file__).resolve().parents[3] / ".cellbank" / "hla-reference"
_RENAMED = re.compile(r"(?:renamed|identical to|now)\s+(?:HLA-)?([A-Z][A-Z0-9]*\*[0-9:]+[A-Z]?)")


class ReleaseError(Exception):
    """The directory is not a usable IPD-IMGT/HLA release (says which file and why)."""


def checksums(directory: Path) -> dict[str, str]:
    """SHA-256 of every file the classification reads; ReleaseError naming a missing one."""
    if not directory.is_dir():
        raise ReleaseError(f"{directory} is not a directory")
    out = {}
    for name in REQUIRED_FILES:
        path = directory / name
        if not path.is_file():
            raise ReleaseError(f"{path} is missing (an IPD-IMGT/HLA release has {name})")
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def load_release(directory: Path, cache_dir: Path | None = DEFAULT_CACHE) -> HlaReference:
    """The classified release in `directory`: from the cache when the files' checksums match
    a cached classification made by the same rules, else derived (a few seconds) and cached."""
    sums = checksums(directory)
    fingerprint = json.dumps([RULES_VERSION, DERIVATION_VERSION, sorted(sums.items())]).encode()
    key = hashlib.sha256(fingerprint).hexdigest()[:24]
    cached = cache_dir / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return _from_document(json.loads(cached.read_text()), sums)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable HLA cache %s: %s", cached, exc)
    try:
        document = _derive(directory)
        reference = _from_document(document, sums)  # parses every name before it is cached
    except (ValueError, KeyError, IndexError) as exc:  # malformed names, bytes, layout
        raise ReleaseError(f"{directory}: not a readable IPD-IMGT/HLA release ({exc})") from exc
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(document))
            partial.replace(cached)  # atomic: a reader sees the whole file or none
        except OSError as exc:  # e.g. a read-only root in a container: derive at each start
            log.warning("HLA reference not cached in %s: %s", cached.parent, exc)
    return reference


def _from_document(document: dict, sums: dict[str, str]) -> HlaReference:
    unknown = set(document["classes"].values()) - set(LIGAND_CLASSES)
    if unknown:
        raise ValueError(f"classes {sorted(unknown)} are not ligand classes")
    return HlaReference(
        release=document["release"],
        checksums=sums,
        classes=document["classes"],
        other_names=frozenset(document["other_names"]),
        retired={k: (v[0], v[1]) for k, v in document["retired"].items()},
        groups={k: tuple(v) for k, v in document["groups"].items()},
    )


def _derive(directory: Path) -> dict:
    release = release_version(directory / "release_version.txt")
    sequences = {locus: read_fasta(directory / f"{locus}_prot.fasta") for locus in CLASS_I_LOCI}
    reference_allele = {locus: _full_length(seqs, locus) for locus, seqs in sequences.items()}
    classes = classify_release(sequences, reference_allele)
    current = _csv_rows(directory / "Allelelist.txt", 2)
    by_id = {row[0]: row[1] for row in current}
    other = sorted(name for _, name in current if parse_name(name).locus not in CLASS_I_LOCI)
    known = set(other)
    missing = [name for _, name in current if name not in classes and name not in known]
    if missing:  # a class I allele listed without a sequence: nothing to read it from
        classes.update(dict.fromkeys(missing, "ambiguous"))
    retired: dict[str, tuple[str, str]] = {}
    for row in _csv_rows(directory / "Deleted_alleles.txt", 3):
        allele_id, old, description = row[0], row[1], ",".join(row[2:])
        found = _RENAMED.search(description)
        now = by_id.get(allele_id) or (found.group(1) if found else "")
        retired[old] = (now if now != old else "", description.strip())
    groups = {
        **_groups(directory / "hla_nom_g.txt"),
        **_groups(directory / "hla_nom_p.txt"),
    }
    return {
        "release": release,
        "classes": classes,
        "other_names": other,
        "retired": retired,
        "groups": groups,
    }


def release_version(path: Path) -> str:
    """`3.58.0` from the `# version: IPD-IMGT/HLA 3.58.0` line."""
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*version:\s*IPD-IMGT/HLA\s+([0-9][0-9.]*)", line)
        if m:
            return m.group(1)
    raise ReleaseError(f"{path} names no IPD-IMGT/HLA version")


def read_fasta(path: Path) -> dict[str, str]:
    """Allele name → protein sequence, from `>HLA:HLA00001 A*01:01:01:01 365 bp` records."""
    sequences: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith(">"):
            parts = line[1:].split()
            if len(parts) < 2:
                raise ReleaseError(f"{path}:{number}: a header without an allele name")
            current = sequences.setdefault(parts[1], [])
        elif line.strip():
            if current is None:
                raise ReleaseError(f"{path}:{number}: sequence before any header")
            current.append(line.strip())
    if not sequences:
        raise ReleaseError(f"{path} holds no sequences")
    return {name: "".join(parts) for name, parts in sequences.items()}


def _full_length(sequences: dict[str, str], locus: str) -> str:
    """The first allele published with its leader peptide (starts with Met) and expressed."""
    for name, sequence in sequences.items():
        if sequence.startswith("M") and len(sequence) > LEADER_LENGTH + 150 and name[-1].isdigit():
            return name
    raise ReleaseError(f"{locus}_prot.fasta has no full-length expressed allele to align to")


def _csv_rows(path: Path, columns: int) -> list[list[str]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("AlleleID"):
            continue
        row = line.split(",")
        if len(row) < columns:
            raise ReleaseError(f"{path}: malformed row {line[:80]!r}")
        rows.append(row)
    return rows


def _groups(path: Path) -> dict[str, list[str]]:
    """`A*;01:01:01:01/01:01:01:02N/…;01:01:01G` → {"A*01:01:01G": ["A*01:01:01:01", …]}."""
    groups = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        locus, _, rest = line.partition(";")
        members, _, group = rest.partition(";")
        if group.strip():
            groups[locus + group.strip()] = [locus + m for m in members.split("/") if m]
    return groups
