"""HLA nomenclature: alleles parsed with mhcgnomes, checked against the WHO format we accept."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidArgument

LOCI = ("A", "B", "C", "DRB1", "DQB1")
EXPRESSION_SUFFIXES = frozenset("NLSQCA")


@dataclass(frozen=True, slots=True)
class HlaAllele:
    """One typed allele, e.g. A*02:01 (2 fields, high resolution) or A*02 (low resolution)."""

    locus: str
    fields: tuple[str, ...]
    suffix: str = ""  # expression suffix (N, L, S, Q, C, A) or G for a G group

    @property
    def name(self) -> str:
        return f"{self.locus}*{':'.join(self.fields)}{self.suffix}"

    @property
    def resolution(self) -> str:
        """low = first field only (allele group); high = two or more fields."""
        return "low" if len(self.fields) == 1 else "high"

    @property
    def group(self) -> str:
        """The first field, e.g. A*02 (what KIR-ligand tables key on)."""
        return f"{self.locus}*{self.fields[0]}"


_parser: Any = None


def _mhcgnomes() -> Any:
    global _parser
    if _parser is None:  # imported on first use: its tables take ~1.5 s to load
        _parser = importlib.import_module("mhcgnomes")
    return _parser


def warm_up() -> None:
    """Load the nomenclature tables now (seconds), not on the first request that needs them."""
    _mhcgnomes()


def parse_allele(text: str, *, field: str = "hla") -> HlaAllele:
    """Parse `A*02:01`, `C*07:02:01:03`, `A*02:01N`, `DRB1*15:01`, `A*02:01:01G`.

    Malformed or non-canonical strings raise InvalidArgument naming the field.
    """
    raw = text.strip().removeprefix("HLA-")
    mhc = _mhcgnomes()
    try:
        parsed = mhc.parse("HLA-" + raw)
    except Exception:
        raise InvalidArgument(field, f"{text!r} is not HLA nomenclature (e.g. A*02:01)") from None
    if type(parsed).__name__ != "Allele":
        raise InvalidArgument(field, f"{text!r} is not a single HLA allele (e.g. A*02:01)")
    canonical = parsed.to_string().removeprefix("HLA-")
    if canonical != raw:
        raise InvalidArgument(
            field, f"{text!r} is not canonical nomenclature; did you mean {canonical}?"
        )
    locus, _, rest = raw.partition("*")
    suffix = rest[-1] if rest and rest[-1].isalpha() else ""
    if suffix and suffix not in EXPRESSION_SUFFIXES | {"G"}:
        raise InvalidArgument(
            field, f"{text!r} has an unknown suffix {suffix!r} (N, L, S, Q, C, A or G)"
        )
    fields = tuple(rest.removesuffix(suffix).split(":"))
    if locus not in LOCI:
        raise InvalidArgument(field, f"locus {locus!r} is not typed here ({', '.join(LOCI)})")
    if not 1 <= len(fields) <= 4 or not all(f.isdigit() and len(f) >= 2 for f in fields):
        raise InvalidArgument(field, f"{text!r} must have 1–4 numeric fields of 2+ digits")
    return HlaAllele(locus, fields, suffix)


def parse_typing(alleles: dict[str, tuple[str, ...]]) -> dict[str, tuple[HlaAllele, ...]]:
    """A typing: two alleles at each locus (homozygous = the same allele twice)."""
    typed: dict[str, tuple[HlaAllele, ...]] = {}
    for locus, names in alleles.items():
        if locus not in LOCI:
            raise InvalidArgument(
                f"hla.{locus}", f"unknown locus; typed loci are {', '.join(LOCI)}"
            )
        if len(names) != 2:
            raise InvalidArgument(f"hla.{locus}", "exactly two alleles per locus")
        parsed = tuple(parse_allele(n, field=f"hla.{locus}") for n in names)
        if any(a.locus != locus for a in parsed):
            raise InvalidArgument(f"hla.{locus}", "allele of another locus")
        typed[locus] = parsed
    missing = [locus for locus in LOCI if locus not in typed]
    if missing:
        raise InvalidArgument("hla", f"missing loci: {', '.join(missing)}")
    return typed
