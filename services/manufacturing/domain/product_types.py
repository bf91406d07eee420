"""Product types and their release specifications: configuration, not constants in code."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.kernel.isbt128 import UNDIVIDED, division_code, parse_product_code, product_code
from shared.errors import InvalidArgument


class Rule(enum.StrEnum):
    AT_LEAST = "AT_LEAST"  # value >= limit
    MORE_THAN = "MORE_THAN"  # value > limit
    LESS_THAN = "LESS_THAN"  # value < limit
    AT_MOST = "AT_MOST"  # value <= limit
    NEGATIVE = "NEGATIVE"  # qualitative: "negative" / "no growth" / "no organisms"
    CONFIRMED = "CONFIRMED"  # qualitative: "confirmed"
    RECORDED = "RECORDED"  # any numeric value >= 0 (checked later, e.g. CD3+ per kg at matching)


NEGATIVE_WORDS = frozenset({"negative", "no growth", "no organisms", "not detected"})


@dataclass(frozen=True, slots=True)
class ReleaseTest:
    name: str
    rule: Rule
    limit: float = 0.0
    unit: str = ""
    required_for_release: bool = (
        True  # False: a follow-up arriving after release (14-day sterility)
    )

    def passes(self, value: float | None, text: str) -> bool:
        if self.rule is Rule.NEGATIVE:
            return text.strip().lower() in NEGATIVE_WORDS
        if self.rule is Rule.CONFIRMED:
            return text.strip().lower() == "confirmed"
        if value is None:
            return False
        return {
            Rule.AT_LEAST: value >= self.limit,
            Rule.MORE_THAN: value > self.limit,
            Rule.LESS_THAN: value < self.limit,
            Rule.AT_MOST: value <= self.limit,
            Rule.RECORDED: value >= 0,
        }[self.rule]

    def describe(self) -> str:
        symbol = {"AT_LEAST": "≥", "MORE_THAN": ">", "LESS_THAN": "<", "AT_MOST": "≤"}.get(
            self.rule.value
        )
        return f"{symbol} {self.limit:g} {self.unit}".strip() if symbol else self.rule.value.lower()


@dataclass(frozen=True, slots=True)
class ProductType:
    code: str  # e.g. NK-ALLO
    description_code: str  # ISBT 128 product description code αoooo (E/F/S, or local A–D)
    stability_days: int
    tests: tuple[ReleaseTest, ...]
    cd3_per_kg_limit: float  # checked again at matching against the recipient's weight
    spec_version: str
    collection_type: str = "V"  # ISBT 128 type of donation: the product code's `t`

    def __post_init__(self) -> None:
        """A misconfigured code is refused when the configuration is read, not at release."""
        parse_product_code(f"{self.description_code}{self.collection_type}{UNDIVIDED}")

    def test(self, name: str) -> ReleaseTest:
        for t in self.tests:
            if t.name == name:
                return t
        raise InvalidArgument("test", f"{name!r} is not in the {self.code} release specification")

    def product_code(self, ordinal: int, of: int) -> str:
        """The ISBT 128 product code of unit `ordinal` (1..`of`) of one batch: S1001V00 for a
        batch made into one unit, S1001VA0, S1001VB0, … for a batch divided into several."""
        return product_code(self.description_code, self.collection_type, division_code(ordinal, of))


ALLOGENEIC_NK = ProductType(
    code="NK-ALLO",
    description_code="S1001",
    # V, volunteer allogeneic: off-the-shelf NK units come from unrelated volunteer donors by
    # leukapheresis and go to any matched recipient (not autologous `1`, not directed `D`/`2`);
    # a bank paying its donors would configure `P`.
    collection_type="V",
    stability_days=5 * 365,
    cd3_per_kg_limit=2e5,
    spec_version="NK-ALLO-2026.1",
    tests=(
        ReleaseTest("viability", Rule.AT_LEAST, 70, "%"),
        ReleaseTest("purity_cd56_cd3neg", Rule.AT_LEAST, 70, "%"),
        ReleaseTest("cd3_content", Rule.RECORDED, unit="cells"),
        ReleaseTest("endotoxin", Rule.LESS_THAN, 5.0, "EU/mL"),
        ReleaseTest("mycoplasma_pcr", Rule.NEGATIVE),
        ReleaseTest("gram_stain", Rule.NEGATIVE),
        ReleaseTest("preliminary_culture", Rule.NEGATIVE),
        ReleaseTest("potency_k562_lysis", Rule.MORE_THAN, 20, "% at 20:1"),
        ReleaseTest("identity_hla_ab", Rule.CONFIRMED),
        ReleaseTest("sterility_14d", Rule.NEGATIVE, required_for_release=False),
    ),
)


def load_product_types(path: Path | None = None) -> Mapping[str, ProductType]:
    """The built-in types, overridden/extended by a JSON file (CELLBANK_PRODUCT_TYPES_FILE)."""
    types = {ALLOGENEIC_NK.code: ALLOGENEIC_NK}
    if path is not None:
        for raw in json.loads(path.read_text()):
            tests = tuple(ReleaseTest(**{**t, "rule": Rule(t["rule"])}) for t in raw.pop("tests"))
            product = ProductType(**raw, tests=tests)
            types[product.code] = product
    return types
