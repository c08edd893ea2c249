"""Rows of the result table: runs, median, target and verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.common import median


@dataclass
class Row:
    figure: str  # the --only name that produced it
    label: str
    unit: str
    runs: list[float]
    target: float | None = None
    higher_is_better: bool = True
    digits: int = 0
    ceiling: bool = False

    @property
    def median(self) -> float:
        return median(self.runs)

    def fmt(self, value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:,.{self.digits}f}"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.higher_is_better else '<='} {self.fmt(self.target)}"

    @property
    def verdict(self) -> str:
        if self.target is None or math.isnan(self.median):
            return "-"
        met = self.median >= self.target if self.higher_is_better else self.median <= self.target
        return "met" if met else "MISSED"


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # per-run details
    notes: list[str] = field(default_factory=list)


def table(rows: list[Row]) -> str:
    header = ("figure", "median", "runs", "target", "verdict")
    body = [(f"{r.label} [{r.unit}]", r.fmt(r.median), ", ".join(r.fmt(v) for v in r.runs),
             r.target_text, r.verdict) for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(b) for b in body)])
