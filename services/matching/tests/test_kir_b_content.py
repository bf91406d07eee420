"""KIR B-content (Cooley et al., Blood 2010): motifs from gene presence, Neutral/Better/Best."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.matching.domain.kir_b_content import BContent, b_content

KIR_GENES = (
    "KIR2DL1", "KIR2DL2", "KIR2DL3", "KIR2DL4", "KIR2DL5", "KIR2DS1", "KIR2DS2", "KIR2DS3",
    "KIR2DS4", "KIR2DS5", "KIR3DL1", "KIR3DL2", "KIR3DL3", "KIR3DS1",
)  # fmt: skip


@pytest.mark.parametrize(
    ("genes", "cen", "tel", "motifs", "group"),
    [
        (("KIR2DL3", "KIR3DL1", "KIR2DS4"), "A/A", "A/A", 0, "Neutral"),  # AA genotype
        (("KIR2DL3", "KIR2DL2", "KIR3DL1"), "A/B", "A/A", 1, "Neutral"),
        (("KIR2DL3", "KIR3DL1", "KIR3DS1"), "A/A", "A/B", 1, "Neutral"),
        (("KIR2DL3", "KIR2DS2", "KIR3DL1", "KIR2DS1"), "A/B", "A/B", 2, "Better"),
        (("KIR2DL3", "KIR3DS1", "KIR2DS1"), "A/A", "B/B", 2, "Better"),
        (("KIR2DL3", "KIR2DL2", "KIR3DS1"), "A/B", "B/B", 3, "Better"),
        (("KIR2DL2", "KIR3DL1", "KIR2DS4"), "B/B", "A/A", 2, "Best"),
        (("KIR2DS2", "KIR3DS1"), "B/B", "B/B", 4, "Best"),
    ],
)
def test_motifs_and_group_from_gene_presence(genes, cen, tel, motifs, group):
    content = b_content(genes)
    assert (content.centromeric, content.telomeric, content.b_motifs, content.group) == (
        cen, tel, motifs, group,
    )  # fmt: skip


def test_cen_b_b_is_best_even_with_fewer_b_motifs_than_a_better_donor():
    best, better = b_content(("KIR2DL2", "KIR3DL1")), b_content(("KIR2DL3", "KIR2DL2", "KIR3DS1"))
    assert best.b_motifs is not None and better.b_motifs is not None
    assert best.b_motifs < better.b_motifs
    assert (best.group, better.group) == ("Best", "Better")


def test_a_side_without_its_marker_genes_is_undetermined_and_said():
    content = b_content(("KIR2DL1", "KIR3DL1", "KIR2DS5"))  # no 2DL2/2DL3/2DS2: Cen unknown
    assert content == BContent("undetermined", "A/A", "undetermined", None, ("KIR2DS5",))
    assert "KIR2DS5 present, Cen or Tel unknown" in content.describe()


def test_two_b_motifs_on_the_known_side_are_better_whatever_the_other_side():
    assert b_content(("KIR3DS1", "KIR2DS1")).group == "Better"  # Tel-B/B, Cen unknown


@given(st.sets(st.sampled_from(KIR_GENES)))
def test_best_exactly_for_cen_b_b_and_better_never_below_two_motifs(genes):
    content = b_content(genes)
    assert (content.group == "Best") == (content.centromeric == "B/B")
    if content.group == "Better" and content.b_motifs is not None:
        assert content.b_motifs >= 2
    if content.group == "Neutral":
        assert content.b_motifs is not None and content.b_motifs <= 1
