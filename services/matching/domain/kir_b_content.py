"""Donor KIR B-content (Cooley et al., Blood 2010): Neutral < Better < Best from gene presence."""

# Centromeric and telomeric motifs from gene presence, grouped Neutral (0–1 B motifs) < Better
# (≥ 2, not Cen-B/B) < Best (Cen-B/B). A count of B genes is not the score: a Cen-B/B donor (2
# motifs) is Best, above a Cen-A/B Tel-B/B donor (3 motifs, Better) — the order the outcome
# data give.

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NEUTRAL, BETTER, BEST, UNDETERMINED = "Neutral", "Better", "Best", "undetermined"
B_CONTENT_GROUPS = (NEUTRAL, BETTER, BEST)
# Genes whose presence alone can't place them centromeric or telomeric (KIR2DL5 untyped for
# A/B, KIR2DS3, KIR2DS5 sit on either side): reported, not counted — as in Cooley's calculator.
# (KIR2DL5B is centromeric and KIR2DL5A telomeric: placed, but they don't change the motifs.)
EITHER_SIDE = ("KIR2DL5", "KIR2DS3", "KIR2DS5")


@dataclass(frozen=True, slots=True)
class BContent:
    centromeric: str  # "A/A", "A/B", "B/B" or "undetermined"
    telomeric: str
    group: str  # Neutral, Better, Best or undetermined
    b_motifs: int | None  # None when a side is undetermined
    unplaced: tuple[str, ...]  # genes present whose side presence can't tell

    def describe(self) -> str:
        motifs = "?" if self.b_motifs is None else str(self.b_motifs)
        text = f"Cen-{self.centromeric}, Tel-{self.telomeric}; {motifs} B motif(s)"
        if self.group == BETTER and self.centromeric == UNDETERMINED:
            text += "; at least Better (Best if Cen-B/B)"
        if self.unplaced:
            text += f"; {', '.join(self.unplaced)} present, Cen or Tel unknown from gene presence"
        return text


def _side(a_present: bool, b_present: bool) -> str:
    if a_present and b_present:
        return "A/B"
    if b_present:
        return "B/B"
    if a_present:
        return "A/A"
    return UNDETERMINED


_MOTIFS = {"A/A": 0, "A/B": 1, "B/B": 2}


def b_content(genes: Iterable[str]) -> BContent:
    """Cen: KIR2DL3 (A) vs KIR2DL2/KIR2DS2 (B); Tel: KIR3DL1/KIR2DS4 (A) vs KIR3DS1/KIR2DS1 (B)."""
    present = {g.strip().upper() for g in genes}
    cen = _side("KIR2DL3" in present, bool({"KIR2DL2", "KIR2DS2"} & present))
    tel = _side(bool({"KIR3DL1", "KIR2DS4"} & present), bool({"KIR3DS1", "KIR2DS1"} & present))
    unplaced = tuple(g for g in EITHER_SIDE if g in present)
    known = [_MOTIFS[s] for s in (cen, tel) if s != UNDETERMINED]
    motifs = sum(known) if len(known) == 2 else None
    if cen == "B/B":
        group = BEST
    elif motifs is not None:
        group = BETTER if motifs >= 2 else NEUTRAL
    elif sum(known) >= 2:  # Cen-A/x unknown or Tel unknown, but already two B motifs
        group = BETTER
    else:
        group = UNDETERMINED
    return BContent(cen, tel, group, motifs, unplaced)
