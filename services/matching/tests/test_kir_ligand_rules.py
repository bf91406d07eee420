"""The KIR-ligand motif rules on hand-written sequences (no release needed): mature numbering,
partial sequences, expression suffixes, and names standing for several alleles."""

from __future__ import annotations

import pytest

from services.matching.domain.kir_ligand import (
    LEADER_LENGTH,
    AlleleNameError,
    HlaReference,
    classify_release,
    consensus,
    ligand_from_residues,
    mature_offset,
    parse_name,
    residues_at,
)

# A made-up 180-residue "mature" class I-like sequence: residues 76, 80, 82, 83 are set per case.
TEMPLATE = ("GSHSMRYFYTAVSRPGRGEPHFIAVGYVDDTQFVRFDSDAASPRMEPRAPWIEQEGPEYWDRNTQIYKAQAQTDRVDLRTLRGYYNQSEAGSHTIQRMYGCDVGPDGRLLRGYDQYAYDGKDYIALNEDLRSWTAADTAAQITQRKWEAARVAEQLRAYLEGLCVEWLRRYLENGKETLQRA")  # fmt: skip
LEADER = "MAVMAPRTLLLLLSGALALTQTWA"
assert len(LEADER) == LEADER_LENGTH


def mature(**residues: str) -> str:
    seq = list(TEMPLATE)
    for position, aa in residues.items():
        seq[int(position.removeprefix("r")) - 1] = aa
    return "".join(seq)


@pytest.mark.parametrize(
    ("locus", "group", "residues", "ligand"),
    [
        ("C", "07", {76: "V", 80: "N", 82: "R", 83: "G"}, "C1"),
        ("C", "03", {76: "V", 80: "K", 82: "R", 83: "G"}, "C2"),
        ("C", "05", {76: "V", 80: "R", 82: "R", 83: "G"}, "ambiguous"),  # neither Asn nor Lys
        ("C", "16", {76: "E", 80: "T", 82: "L", 83: "R"}, "ambiguous"),  # Bw4 is A/B only
        ("B", "57", {76: "E", 80: "I", 82: "L", 83: "R"}, "Bw4-80I"),
        ("B", "44", {76: "E", 80: "T", 82: "L", 83: "R"}, "Bw4-80T"),
        ("B", "27", {76: "E", 80: "N", 82: "L", 83: "R"}, "ambiguous"),  # Bw4, subtype unknown
        ("B", "07", {76: "E", 80: "N", 82: "R", 83: "G"}, "none"),  # Bw6
        ("B", "46", {76: "V", 80: "N", 82: "R", 83: "G"}, "C1"),
        ("A", "24", {76: "E", 80: "I", 82: "L", 83: "R"}, "Bw4-80I"),
        ("A", "24", {76: "A", 80: "T", 82: "R", 83: "G"}, "none"),  # A*24:04-like: not Bw4
        ("A", "11", {76: "V", 80: "T", 82: "R", 83: "G"}, "A3/A11"),
        ("A", "02", {76: "V", 80: "N", 82: "R", 83: "G"}, "none"),  # C1 motif counts on B only
        ("A", "02", {76: "V", 80: "", 82: "", 83: ""}, "ambiguous"),  # sequence too short
    ],
)
def test_motif_rules(locus, group, residues, ligand):
    assert ligand_from_residues(locus, group, residues) == ligand


def test_a_full_length_sequence_is_numbered_after_its_leader():
    seq = LEADER + mature(r80="K")
    offset = mature_offset(seq, TEMPLATE)
    assert offset == LEADER_LENGTH
    assert residues_at(seq, offset)[80] == "K"


def test_a_partial_sequence_from_residue_2_is_placed_by_alignment():
    seq = mature(r80="K")[1:181]  # exons 2–3 as published: starts at mature residue 2
    offset = mature_offset(seq, TEMPLATE)
    assert offset == -1
    assert residues_at(seq, offset)[80] == "K"


def test_a_sequence_starting_elsewhere_is_placed_by_its_anchor_kmers():
    seq = mature(r80="K")[30:150]
    offset = mature_offset(seq, TEMPLATE)
    assert offset == -30
    assert residues_at(seq, offset)[80] == "K"


def test_a_sequence_that_does_not_reach_residue_80_has_no_residue_there():
    seq = mature()[90:]
    offset = mature_offset(seq, TEMPLATE)
    assert offset is None or residues_at(seq, offset)[80] == ""


def test_classify_release_applies_suffixes_to_sequence_classes():
    sequences = {
        "C": {
            "C*01:02:01:01": LEADER + mature(r80="N"),
            "C*01:02:01:02N": LEADER + mature(r80="N"),
            "C*01:03S": LEADER + mature(r80="N"),
            "C*01:04Q": LEADER + mature(r80="K"),
            "C*01:05": mature(r80="K")[1:181],
            "C*01:06L": mature(r80="N")[1:181],
        }
    }
    classes = classify_release(sequences, {"C": "C*01:02:01:01"})
    assert classes == {
        "C*01:02:01:01": "C1", "C*01:02:01:02N": "not-expressed", "C*01:03S": "not-expressed",
        "C*01:04Q": "ambiguous", "C*01:05": "C2", "C*01:06L": "C1",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([("", "C1"), ("L", "C1"), ("N", "not-expressed")], "C1"),
        ([("", "C1"), ("", "C2")], "ambiguous"),
        ([("", "C1"), ("Q", "ambiguous")], "C1"),  # questionable members are not counted
        ([("N", "not-expressed"), ("S", "not-expressed")], "not-expressed"),
        ([("Q", "ambiguous")], "ambiguous"),
        ([], "ambiguous"),
    ],
)
def test_consensus_over_expressed_members(members, expected):
    assert consensus(members) == expected


CLASSES = {
    "C*16:01:01:01": "C1", "C*16:02:01:01": "C2", "C*16:04:01": "C1",
    "C*16:05:01N": "not-expressed", "C*17:01:01:01": "C2", "C*17:01:01:02N": "not-expressed",
    "C*18:02:01N": "not-expressed",
}  # fmt: skip
REFERENCE = HlaReference(
    release="test",
    checksums={},
    classes=CLASSES,
    other_names=frozenset({"DPB1*1000:01"}),
    retired={
        "C*1601": ("C*16:01:01:01", "renamed C*16:01:01:01"),
        "C*16:99": ("", "Sequence shown to be in error"),
    },
    groups={"C*16:01:01G": ("C*16:01:01:01", "C*16:05:01N"), "C*16:01P": ("C*16:01:01:01",)},
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("C*16", "ambiguous"),
        ("C*16:01", "C1"),
        ("HLA-C*16:02", "C2"),
        ("C*16:05", "not-expressed"),
        ("C*16:05N", "not-expressed"),
        ("C*17:01", "C2"),  # the null member is not a ligand-bearing allele of the name
        ("C*17:01N", "not-expressed"),
        ("C*18", "not-expressed"),
        ("C*16:01:01G", "C1"),
        ("C*16:01P", "C1"),
        ("DPB1*1000:01", "none"),
    ],
)
def test_a_name_standing_for_several_alleles(name, expected):
    assert REFERENCE.classify(name) == expected


@pytest.mark.parametrize(
    ("name", "problem", "current"),
    [
        ("C*1601", "renamed C*16:01:01:01", "C*16:01:01:01"),
        ("C*16:99", "Sequence shown to be in error", ""),
        ("C*16:98", "unknown in IPD-IMGT/HLA test", ""),
        ("C*16:01:02G", "no such G/P group", ""),
        ("C16", "not HLA allele nomenclature", ""),
        ("C*16:01X", "not HLA allele nomenclature", ""),
        ("C*" + "1" * 100_000, "(100002 characters): not HLA allele nomenclature", ""),
    ],
)
def test_names_the_reference_cannot_classify_are_refused_saying_why(name, problem, current):
    with pytest.raises(AlleleNameError) as refused:
        REFERENCE.classify(name)
    assert problem in str(refused.value)
    assert refused.value.current == current


def test_parse_name_keeps_fields_and_suffix():
    assert parse_name("HLA-A*24:02:01:02L").fields == ("24", "02", "01", "02")
    assert parse_name("A*24:02:01:02L").suffix == "L"
    assert parse_name("A*01:01:01G").text == "A*01:01:01G"
