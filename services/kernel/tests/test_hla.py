"""HLA nomenclature: alleles accepted, malformed strings refused, typings complete, resolution kept."""

from __future__ import annotations

import pytest

from services.kernel.hla import LOCI, HlaAllele, parse_allele, parse_typing
from shared.errors import InvalidArgument

TYPING = {
    "A": ("A*02:01", "A*24:02"),
    "B": ("B*07:02", "B*44:02"),
    "C": ("C*07:02", "C*05:01"),
    "DRB1": ("DRB1*15:01", "DRB1*04:01"),
    "DQB1": ("DQB1*06:02", "DQB1*03:02"),
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A*02:01", HlaAllele("A", ("02", "01"))),
        ("C*07:02:01:03", HlaAllele("C", ("07", "02", "01", "03"))),
        ("A*02:01N", HlaAllele("A", ("02", "01"), "N")),
        ("A*02", HlaAllele("A", ("02",))),
        ("A*02:01:01G", HlaAllele("A", ("02", "01", "01"), "G")),
        ("DRB1*15:01", HlaAllele("DRB1", ("15", "01"))),
        ("DQB1*06:02", HlaAllele("DQB1", ("06", "02"))),
    ],
)
def test_parse_allele_accepts_who_nomenclature(text, expected):
    allele = parse_allele(text)
    assert allele == expected
    assert allele.name == text


def test_parse_allele_tolerates_hla_prefix():
    assert parse_allele("HLA-A*02:01") == HlaAllele("A", ("02", "01"))


@pytest.mark.parametrize(
    "text",
    [
        "XYZ",
        "A*2:01",  # non-canonical: fields have two digits at least
        "a*02:01",  # non-canonical case
        "A*02:01X",  # not an expression suffix
        "A*02:01:01:01:01",  # five fields
        "DPB1*04:01",  # a valid allele, but the locus is not typed here
        "",
    ],
)
def test_parse_allele_refuses_malformed_or_untyped_alleles(text):
    with pytest.raises(InvalidArgument) as refused:
        parse_allele(text, field="hla.A")
    assert refused.value.field == "hla.A"


def test_non_canonical_allele_refusal_suggests_the_canonical_name():
    with pytest.raises(InvalidArgument, match=r"did you mean A\*02:01"):
        parse_allele("A*2:01")


def test_untyped_locus_refusal_names_the_typed_loci():
    with pytest.raises(InvalidArgument, match="not typed here"):
        parse_allele("DPB1*04:01")


def test_first_field_only_is_low_resolution():
    assert parse_allele("A*02").resolution == "low"


@pytest.mark.parametrize("text", ["A*02:01", "C*07:02:01:03", "A*02:01:01G", "A*02:01N"])
def test_two_or_more_fields_is_high_resolution(text):
    assert parse_allele(text).resolution == "high"


def test_allele_group_is_locus_and_first_field():
    assert parse_allele("C*07:02:01:03").group == "C*07"


def test_parse_typing_accepts_two_alleles_at_every_locus():
    typed = parse_typing(TYPING)
    assert tuple(typed) == LOCI
    assert [a.name for a in typed["A"]] == ["A*02:01", "A*24:02"]


def test_parse_typing_accepts_homozygous_locus_as_same_allele_twice():
    typed = parse_typing({**TYPING, "A": ("A*02:01", "A*02:01")})
    assert typed["A"][0] == typed["A"][1]


def test_parse_typing_keeps_resolution_per_allele():
    typed = parse_typing({**TYPING, "B": ("B*07", "B*44:02")})
    assert [a.resolution for a in typed["B"]] == ["low", "high"]


@pytest.mark.parametrize("alleles", [("A*02:01",), ("A*02:01", "A*24:02", "A*01:01")])
def test_parse_typing_refuses_other_than_two_alleles_per_locus(alleles):
    with pytest.raises(InvalidArgument, match="two alleles") as refused:
        parse_typing({**TYPING, "A": alleles})
    assert refused.value.field == "hla.A"


def test_parse_typing_refuses_missing_locus():
    partial = {locus: alleles for locus, alleles in TYPING.items() if locus != "DQB1"}
    with pytest.raises(InvalidArgument, match="missing loci: DQB1") as refused:
        parse_typing(partial)
    assert refused.value.field == "hla"


def test_parse_typing_refuses_untyped_locus():
    with pytest.raises(InvalidArgument) as refused:
        parse_typing({**TYPING, "DPB1": ("DPB1*04:01", "DPB1*04:01")})
    assert refused.value.field == "hla.DPB1"


def test_parse_typing_refuses_allele_of_another_locus():
    with pytest.raises(InvalidArgument, match="another locus") as refused:
        parse_typing({**TYPING, "A": ("A*02:01", "B*07:02")})
    assert refused.value.field == "hla.A"


def test_parse_typing_names_the_locus_of_a_malformed_allele():
    with pytest.raises(InvalidArgument) as refused:
        parse_typing({**TYPING, "C": ("C*07:02", "C*7:02")})
    assert refused.value.field == "hla.C"
