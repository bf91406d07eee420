"""The one table `make bench` prints (and writes as JSON): every figure beside its baseline.

A row is one figure: what was measured, its unit, CellBank's value, the baseline measured in the
same run (what it is, in words) and the ratio CellBank / baseline. For rates (higher is better)
a ratio below 1 is the platform's cost; for latencies and memory (lower is better) a ratio
above 1 is. Targets are the issue's; they inform and never fail the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    unit: str  # "events/s", "ms", "MiB", ...
    cellbank: float | None
    baseline: float | None = None
    baseline_is: str = "-"  # what the baseline does, in a few words
    target: float | None = None
    higher_is_better: bool = True
    error: str = ""

    @property
    def ratio(self) -> float | None:
        if self.cellbank is None or not self.baseline:
            return None
        return self.cellbank / self.baseline

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        sign = ">=" if self.higher_is_better else "<="
        shown = f"{sign} {_number(self.target)}"
        if self.cellbank is None:
            return shown
        met = (
            self.cellbank >= self.target if self.higher_is_better else self.cellbank <= self.target
        )
        return f"{shown} ({'met' if met else 'NOT met'})"

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio, "verdict": self.verdict}


def _number(value: float | None) -> str:
    if value is None:
        return "error"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def render(rows: Sequence[Row], title: str) -> str:
    header = ("figure", "unit", "cellbank", "baseline", "ratio", "target", "baseline is")
    cells = [
        (
            r.figure,
            r.unit,
            _number(r.cellbank),
            _number(r.baseline) if r.baseline is not None else "-",
            f"{r.ratio:.2f}" if r.ratio is not None else "-",
            r.verdict,
            r.baseline_is,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header))]
    right = {2, 3, 4}

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out = [title, line(header), "  ".join("-" * w for w in widths), *(line(c) for c in cells)]
    out.append(
        "ratio = cellbank / baseline (rates: below 1 is the platform's cost; ms and MiB: above 1"
        " is); targets inform, they never fail the run"
    )
    out += [f"error in {r.figure}: {r.error}" for r in rows if r.error]
    return "\n".join(out)
