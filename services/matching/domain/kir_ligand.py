"""KIR ligands of HLA class I alleles, from each allele's protein sequence (mature numbering)."""

# Pure rules (DOMAIN.md, Matching): HLA-C residue 80 Asn → C1, Lys → C2; HLA-A/-B Leu82-Arg83 →
# Bw4 (Ile80 → Bw4-80I, Thr80 → Bw4-80T); HLA-B Val76 + Asn80 → C1; A*03/A*11 → A3/A11. Null,
# secreted and cytoplasmic alleles (N, S, C) present no ligand; Q and A (questionable, aberrant
# expression) are ambiguous. A name that stands for several alleles (a first-field group, a
# two-field name, a G or P group) has a ligand only where every expressed member agrees.
#
# Where the rules do not decide (a Bw4 motif with a residue 80 other than Ile/Thr; an HLA-C
# residue 80 other than Asn/Lys; a sequence that does not reach residues 76–83) the answer is
# `ambiguous`: it earns no KIR-ligand points, which is the conservative side.

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

C1, C2, BW4_80I, BW4_80T, A3_A11 = "C1", "C2", "Bw4-80I", "Bw4-80T", "A3/A11"
NONE, AMBIGUOUS, NOT_EXPRESSED = "none", "ambiguous", "not-expressed"
RULES_VERSION = "kir-ligand-2"  # bump when a rule below changes: it keys caches and matches
LIGAND_CLASSES = (C1, C2, BW4_80I, BW4_80T, A3_A11, NONE, AMBIGUOUS, NOT_EXPRESSED)
CLASS_I_LOCI = ("A", "B", "C")
LEADER_LENGTH = 24  # class I leader peptide: mature residue 1 follows it
NOT_EXPRESSED_SUFFIXES = frozenset("NSC")  # null, secreted, cytoplasmic: no surface ligand
UNCERTAIN_SUFFIXES = frozenset("QA")  # questionable, aberrant expression
RESIDUES = (76, 80, 82, 83)  # what the rules read
_ANCHOR = range(50, 111)  # mature residues aligned to place a sequence (around 76–83)
_K = 5

MAX_NAME = 40  # the longest real names (e.g. DPB1*1000:01:01:01N) are about 20 characters
NAME = re.compile(
    r"^(?P<locus>[A-Z][A-Z0-9]*)\*(?P<fields>[0-9]{2,4}(?::[0-9]{2,4}){0,3})(?P<suffix>[NLSQCAGP]?)$"
)


class AlleleNameError(ValueError):
    """A name the reference cannot classify: malformed, unknown, or no longer current."""

    def __init__(self, name: str, problem: str, current: str = "", retired: bool = False) -> None:
        shown = name if len(name) <= 40 else f"{name[:40]}… ({len(name)} characters)"
        super().__init__(f"{shown}: {problem}")
        self.name, self.problem, self.current, self.retired = name, problem, current, retired


@dataclass(frozen=True, slots=True)
class AlleleName:
    locus: str
    fields: tuple[str, ...]
    suffix: str  # expression suffix (N L S Q C A), G/P for a group, or ""

    @property
    def text(self) -> str:
        return f"{self.locus}*{':'.join(self.fields)}{self.suffix}"


def parse_name(text: str) -> AlleleName:
    """`C*03:07`, `HLA-A*24:02:01:02L`, `A*01:01:01G`, `C*16`; AlleleNameError if malformed."""
    raw = text.strip().removeprefix("HLA-")
    m = NAME.match(raw) if len(raw) <= MAX_NAME else None
    if m is None:
        raise AlleleNameError(text, "not HLA allele nomenclature (e.g. C*03:07)")
    return AlleleName(m["locus"], tuple(m["fields"].split(":")), m["suffix"])


# ---- one allele, from its sequence ------------------------------------------------------------


def mature_offset(sequence: str, reference_mature: str) -> int | None:
    """Index in `sequence` of mature residue 1 (may be negative for a sequence that starts
    later), found by aligning the region around residues 50–110 with the locus's reference;
    None where the sequence cannot be placed."""
    for offset in (LEADER_LENGTH, -1):  # full length with leader; exons 2–3 from residue 2
        if _identity(sequence, reference_mature, offset) >= 0.7:
            return offset
    votes: dict[int, int] = defaultdict(int)
    kmers = {
        reference_mature[r - 1 : r - 1 + _K]: r
        for r in _ANCHOR
        if r - 1 + _K <= len(reference_mature)
    }
    for i in range(len(sequence) - _K + 1):
        r = kmers.get(sequence[i : i + _K])
        if r is not None:
            votes[i - (r - 1)] += 1
    if not votes:
        return None
    best = max(votes, key=lambda o: (votes[o], -abs(o - LEADER_LENGTH)))
    return best if _identity(sequence, reference_mature, best) >= 0.6 else None


def _identity(sequence: str, reference_mature: str, offset: int) -> float:
    same = total = 0
    for r in _ANCHOR:
        i = offset + r - 1
        if 0 <= i < len(sequence) and r <= len(reference_mature):
            total += 1
            same += sequence[i] == reference_mature[r - 1]
    return same / total if total >= 20 else 0.0


def residues_at(sequence: str, offset: int, positions: Iterable[int] = RESIDUES) -> dict[int, str]:
    """Mature residues at the positions ('' where the sequence does not reach or reads X/*)."""
    out = {}
    for r in positions:
        i = offset + r - 1
        aa = sequence[i] if 0 <= i < len(sequence) else ""
        out[r] = aa if aa.isalpha() and aa != "X" else ""
    return out


def ligand_from_residues(locus: str, group: str, residues: Mapping[int, str]) -> str:
    """The KIR ligand an expressed class I allele carries, by the motif rules."""
    r76, r80, r82, r83 = (residues.get(r, "") for r in RESIDUES)
    if locus == "C":
        return {"N": C1, "K": C2}.get(r80, AMBIGUOUS)
    if locus not in ("A", "B"):
        return NONE
    if not (r80 and r82 and r83 and (locus == "A" or r76)):
        return AMBIGUOUS  # the sequence does not reach the residues the rules read
    if (r82, r83) == ("L", "R"):
        return {"I": BW4_80I, "T": BW4_80T}.get(r80, AMBIGUOUS)
    if locus == "B" and (r76, r80) == ("V", "N"):
        return C1
    if locus == "A" and group in ("03", "11"):
        return A3_A11
    return NONE


def ligand_of_allele(name: AlleleName, sequence_ligand: str) -> str:
    """An allele's class given its name's expression suffix and its sequence's ligand."""
    if name.suffix in NOT_EXPRESSED_SUFFIXES:
        return NOT_EXPRESSED
    if name.suffix in UNCERTAIN_SUFFIXES:
        return AMBIGUOUS
    return sequence_ligand


def consensus(member_classes: Iterable[tuple[str, str]]) -> str:
    """The class of a name standing for several alleles, from (suffix, class) of its members:
    the one class every expressed member (no suffix, or L) has, else ambiguous; a name whose
    members are all null/secreted/cytoplasmic is not expressed."""
    members = list(member_classes)
    expressed = {cls for suffix, cls in members if suffix in ("", "L")}
    if len(expressed) == 1:
        return next(iter(expressed))
    if expressed:
        return AMBIGUOUS
    if members and all(suffix in NOT_EXPRESSED_SUFFIXES for suffix, _ in members):
        return NOT_EXPRESSED
    return AMBIGUOUS


# ---- a release --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # compared (and cached) by identity: one object per load
class HlaReference:
    """One IPD-IMGT/HLA release, classified: every current allele name → ligand class
    (class I; other loci present no KIR ligand), names no longer current, G and P groups."""

    release: str  # e.g. 3.58.0
    checksums: Mapping[str, str]  # file name → sha256
    classes: Mapping[str, str]  # full current name → class (A, B, C)
    other_names: frozenset[str]  # current names of other loci
    retired: Mapping[str, tuple[str, str]]  # old name → (current name or "", description)
    groups: Mapping[str, tuple[str, ...]]  # "A*01:01:01G" / "A*01:01P" → member names
    _members: dict[tuple[str, tuple[str, ...]], list[AlleleName]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for full in (*self.classes, *self.other_names):
            name = parse_name(full)
            for depth in range(1, len(name.fields) + 1):
                self._members.setdefault((name.locus, name.fields[:depth]), []).append(name)

    @property
    def version(self) -> str:
        return f"ipd-imgt-hla-{self.release}"

    def classify(self, text: str) -> str:
        """The ligand class of a typed name; AlleleNameError if malformed, unknown or retired."""
        name = parse_name(text)
        canonical = name.text
        if canonical in self.classes:
            return self.classes[canonical]
        if canonical in self.retired and canonical not in self.other_names:
            # before prefixes: a name that dropped a suffix (A*01:159 → A*01:159Q) is refused
            current, description = self.retired[canonical]
            problem = f"no longer an allele name in IPD-IMGT/HLA {self.release}"
            detail = f"; renamed {current}" if current else f" ({description})"
            raise AlleleNameError(text, problem + detail, current, retired=True)
        if name.suffix in ("G", "P"):
            members = self.groups.get(canonical)
            if members is None:
                raise AlleleNameError(text, f"no such G/P group in IPD-IMGT/HLA {self.release}")
            return consensus(self._member_class(parse_name(m)) for m in members)
        found = [
            m
            for m in self._members.get((name.locus, name.fields), ())
            if not name.suffix or m.suffix == name.suffix
        ]
        if found:
            if name.locus not in CLASS_I_LOCI:
                return NONE
            if name.suffix:
                return ligand_of_allele(name, consensus(self._member_class(m) for m in found))
            return consensus(self._member_class(m) for m in found)
        raise AlleleNameError(text, f"unknown in IPD-IMGT/HLA {self.release}")

    def _member_class(self, member: AlleleName) -> tuple[str, str]:
        if member.locus not in CLASS_I_LOCI:
            return member.suffix, NONE
        return member.suffix, self.classes.get(member.text, AMBIGUOUS)


def classify_release(
    sequences: Mapping[str, Mapping[str, str]], reference_allele: Mapping[str, str]
) -> dict[str, str]:
    """Every class I allele of a release → class. `sequences[locus][name]` is the protein
    sequence as published; `reference_allele[locus]` names a full-length allele whose
    sequence (leader included) places the others in mature numbering."""
    classes: dict[str, str] = {}
    for locus, alleles in sequences.items():
        reference = alleles[reference_allele[locus]][LEADER_LENGTH:]
        for text, sequence in alleles.items():
            name = parse_name(text)
            offset = mature_offset(sequence, reference)
            if offset is None:
                by_sequence = AMBIGUOUS
            else:
                by_sequence = ligand_from_residues(
                    locus, name.fields[0], residues_at(sequence, offset)
                )
            classes[name.text] = ligand_of_allele(name, by_sequence)
    return classes
