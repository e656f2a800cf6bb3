"""Rows, targets, side-by-side timing and the Markdown report."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Measure = Literal["ratio", "added", "value"]
Comparison = Literal["<=", ">=", "=="]
Scale = Literal["smoke", "quick", "full"]


@dataclass(frozen=True)
class Target:
    """What a row must show: its ratio, the amount added, or the value itself against a bound."""

    measure: Measure
    op: Comparison
    bound: float
    unit: str = ""

    def describe(self) -> str:
        label = {"ratio": "ratio", "added": "added", "value": "value"}[self.measure]
        unit = f" {self.unit}" if self.unit else ""
        return f"{label} {self.op} {_number(self.bound)}{unit}"

    def met(self, baseline: float | None, tenancy: float, ratio: float | None = None) -> bool:
        if self.measure == "value":
            observed = tenancy
        elif baseline is None:
            return False
        elif self.measure == "added":
            observed = tenancy - baseline
        elif ratio is not None:
            observed = ratio
        else:
            observed = tenancy / baseline if baseline else float("inf")
        if self.op == "<=":
            return observed <= self.bound
        if self.op == ">=":
            return observed >= self.bound
        return observed == self.bound


@dataclass(frozen=True)
class Row:
    """One measurement: ``tenancy`` beside ``baseline`` (``None`` when there is none)."""

    what: str
    baseline: float | None
    tenancy: float
    unit: str
    target: Target | None = None  # None: shown for comparison (an anti-pattern, say), not judged
    note: str = ""
    paired_ratio: float | None = None  # the median of per-sample ratios, when measured in pairs

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.baseline is None or self.baseline == 0:
            return None
        return self.tenancy / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.baseline, self.tenancy, self.ratio)


@dataclass
class Section:
    """A titled group of rows, with what it measured and how."""

    title: str
    method: str
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


def side_by_side(
    baseline: Callable[[], object],
    tenancy: Callable[[], object],
    *,
    repeats: int,
    warmup: int = 3,
) -> tuple[float, float]:
    """Median seconds of each, run interleaved (ABBA) so drift hits both alike."""
    gc.collect()
    gc.disable()  # a collection inside one sample and not the other is noise
    try:
        return _side_by_side(baseline, tenancy, repeats, warmup)
    finally:
        gc.enable()


def _side_by_side(
    baseline: Callable[[], object], tenancy: Callable[[], object], repeats: int, warmup: int
) -> tuple[float, float]:
    for _ in range(warmup):
        baseline()
        tenancy()
    times: tuple[list[float], list[float]] = ([], [])
    for index in range(repeats):
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for which in order:
            work = baseline if which == 0 else tenancy
            start = time.perf_counter()
            work()
            times[which].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render(sections: Sequence[Section], header: Sequence[str]) -> str:
    """The Markdown report: ``header`` lines, then one table per section."""
    lines = [*header, ""]
    judged = [row for section in sections for row in section.rows if row.met is not None]
    missed = [row for row in judged if not row.met]
    lines.append(f"**{len(judged) - len(missed)} of {len(judged)} targets met.**")
    lines.append("")
    for section in sections:
        lines += [f"## {section.title}", "", section.method, ""]
        lines.append("| what | baseline | rls_tenancy | unit | ratio | target | met |")
        lines.append("|---|---:|---:|---|---:|---|:-:|")
        for row in section.rows:
            met = "–" if row.met is None else ("yes" if row.met else "**no**")
            what = f"{row.what} ({row.note})" if row.note else row.what
            ratio = "–" if row.ratio is None else f"{row.ratio:.3f}"
            target = row.target.describe() if row.target else "(for comparison)"
            cells = (what, _number(row.baseline), _number(row.tenancy), row.unit, ratio, target, met)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
