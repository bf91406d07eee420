"""KIR ligands against a real IPD-IMGT/HLA release (the handbook's 3.58.0 copy beside the
checkout, or CELLBANK_HLA_REFERENCE): the named corrections, whole groups checked against
their own sequences, and properties of the whole release."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from deploy.processes import hla_reference_dir
from services.matching.adapters import hla_release
from services.matching.adapters.hla_release import checksums, load_release, read_fasta
from services.matching.domain.kir_ligand import (
    LIGAND_CLASSES,
    AlleleNameError,
    HlaReference,
    parse_name,
)

RELEASE = Path(hla_reference_dir()) if hla_reference_dir() else None
if RELEASE is None or not RELEASE.is_dir():
    pytest.skip(
        "no IPD-IMGT/HLA release: neither CELLBANK_HLA_REFERENCE nor ../shared/reference",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> HlaReference:
    assert RELEASE is not None
    return load_release(RELEASE, cache_dir=tmp_path_factory.mktemp("hla-cache"))


@pytest.mark.parametrize(
    ("allele", "ligand"),
    [
        ("C*03:07", "C2"),
        ("C*07:07", "C2"),
        ("C*12:04", "C2"),
        ("C*15:07", "C1"),
        ("C*16:08", "C1"),
        ("C*16:09", "C2"),
        ("C*16:01", "C1"),
        ("C*16:02", "C2"),
        ("C*03:04", "C1"),
        ("C*07:01", "C1"),
        ("C*05:01", "C2"),
        ("A*25:01", "Bw4-80I"),
        ("A*23:01", "Bw4-80I"),
        ("A*24:02", "Bw4-80I"),
        ("A*32:01", "Bw4-80I"),
        ("A*24:04", "none"),
        ("B*46:01", "C1"),
        ("B*73:01", "C1"),
        ("B*57:01", "Bw4-80I"),
        ("B*44:02", "Bw4-80T"),
        ("B*07:02", "none"),
        ("A*03:01", "A3/A11"),
        ("A*11:01", "A3/A11"),
        ("A*02:01", "none"),
        ("C*16", "ambiguous"),
        ("C*03", "ambiguous"),
        ("A*01:01:01:02N", "not-expressed"),
        ("A*01:01:01G", "none"),
        ("A*01:01P", "none"),
        ("DRB1*15:01", "none"),
    ],
)
def test_named_alleles(reference, allele, ligand):
    assert reference.classify(allele) == ligand


def _direct_class(locus: str, group: str, sequence: str) -> str | None:
    """The rules read straight off a sequence published whole (leader of 24) or from mature
    residue 2 — an independent check of the alignment; None for other layouts."""
    if sequence.startswith("M") and sequence[25:28] == "SHS":
        first = 24
    elif sequence.startswith("SHS"):
        first = -1
    else:
        return None

    def at(r: int) -> str:
        i = first + r - 1
        return sequence[i] if 0 <= i < len(sequence) else ""

    r76, r80, r82, r83 = at(76), at(80), at(82), at(83)
    if not (r80 and r83):
        return None
    if locus == "C":
        return {"N": "C1", "K": "C2"}.get(r80, "ambiguous")
    if (r82, r83) == ("L", "R"):
        return {"I": "Bw4-80I", "T": "Bw4-80T"}.get(r80, "ambiguous")
    if locus == "B" and (r76, r80) == ("V", "N"):
        return "C1"
    if locus == "A" and group in ("03", "11"):
        return "A3/A11"
    return "none"


@pytest.mark.parametrize("group", ["A*23", "A*24", "A*25", "A*32", "B*46", "B*73", "C*16"])
def test_every_allele_of_the_group_has_its_sequences_class(reference, group):
    assert RELEASE is not None
    locus = group[0]
    sequences = read_fasta(RELEASE / f"{locus}_prot.fasta")
    checked = 0
    for name, sequence in sequences.items():
        parsed = parse_name(name)
        if f"{parsed.locus}*{parsed.fields[0]}" != group:
            continue
        found = reference.classify(name)
        if parsed.suffix in ("N", "S", "C"):
            assert found == "not-expressed", name
        elif parsed.suffix in ("Q", "A"):
            assert found == "ambiguous", name
        elif (direct := _direct_class(locus, parsed.fields[0], sequence)) is not None:
            assert found == direct, name
            checked += 1
    assert checked >= 5, f"too few {group} sequences checked directly"


def test_every_two_field_name_of_the_release_is_classified(reference):
    names = {
        f"{n.locus}*{':'.join(n.fields[:2])}{n.suffix if n.suffix in 'NSCQLA' else ''}"
        for n in map(parse_name, reference.classes)
    }
    assert len(names) > 15_000
    classes = {name: reference.classify(name) for name in names}
    assert set(classes.values()) <= set(LIGAND_CLASSES)
    assert {"C1", "C2", "Bw4-80I", "Bw4-80T", "A3/A11", "none"} <= set(classes.values())


def test_first_field_groups_are_ambiguous_exactly_where_their_expressed_members_disagree(
    reference,
):
    expressed: dict[str, set[str]] = defaultdict(set)
    for full, cls in reference.classes.items():
        name = parse_name(full)
        if name.suffix in ("", "L"):
            expressed[f"{name.locus}*{name.fields[0]}"].add(cls)
    assert len(expressed) > 60
    for group, found in expressed.items():
        expected = next(iter(found)) if len(found) == 1 else "ambiguous"
        assert reference.classify(group) == expected, (group, sorted(found))
    assert reference.classify("B*73") == "C1"  # a group that agrees keeps its ligand


@pytest.mark.parametrize(
    ("old", "current"),
    [
        ("A*01:34N", "A*01:01:38L"),
        ("A*02:01:08", "A*02:1040"),
        ("A*0105N", "A*01:04:01:01N"),
        ("A*01:159", "A*01:159Q"),  # a dropped suffix is the old name, not a group of the new
    ],
)
def test_retired_names_are_refused_with_the_current_name(reference, old, current):
    with pytest.raises(AlleleNameError) as refused:
        reference.classify(old)
    assert refused.value.retired and refused.value.current == current
    assert f"renamed {current}" in str(refused.value)


def test_a_name_never_assigned_is_refused_saying_so(reference):
    with pytest.raises(AlleleNameError, match="Name never assigned"):
        reference.classify("DPB1*1201")


def test_no_retired_name_is_classified(reference):
    for old in reference.retired:
        if old in reference.classes or old in reference.other_names:
            continue
        with pytest.raises(AlleleNameError):
            reference.classify(old)


def test_g_and_p_groups_parse(reference):
    assert len([g for g in reference.groups if g.endswith("G")]) > 500
    assert len([g for g in reference.groups if g.endswith("P")]) > 500
    assert all(reference.classify(g) in LIGAND_CLASSES for g in reference.groups)


def test_loading_is_cached_by_the_files_checksums(tmp_path, monkeypatch):
    """The second load reads the cache instead of deriving (no timing: it is checked by
    making a second derivation impossible)."""
    assert RELEASE is not None
    first = load_release(RELEASE, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1

    def no_second_derivation(directory):
        raise AssertionError("derived again although the cache matches the files")

    monkeypatch.setattr(hla_release, "_derive", no_second_derivation)
    again = load_release(RELEASE, cache_dir=tmp_path)
    assert again.classes == first.classes and again.release == first.release == "3.58.0"
    assert again.checksums == checksums(RELEASE)
