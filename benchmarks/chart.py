"""The report's judged ratios drawn as an SVG bar chart, for the docs' performance page.

Drawn from the Markdown report itself (``make bench`` writes both), so the
chart and the tables never disagree: ``python -m benchmarks.chart`` redraws
it from ``benchmarks/RESULTS.md``. One bar per row judged on a ratio, the
baseline at 1, the row's target as a tick, a missed target in another colour.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

_TARGET = re.compile(r"^ratio (<=|>=|==) ([0-9.]+)$")
LABEL_WIDTH = 470
BAR_WIDTH = 330
ROW_HEIGHT = 18
SCALE_MAX = 1.5


@dataclass(frozen=True)
class Bar:
    """One judged ratio: the row's name, its ratio, its target's bound and whether it was met."""

    section: str
    what: str
    ratio: float
    op: str
    bound: float
    met: bool


def bars(report: str) -> list[Bar]:
    """The rows of ``report`` judged on a ratio, in report order."""
    found: list[Bar] = []
    section = ""
    for line in report.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) != 7 or cells[0] == "what":
            continue
        target = _TARGET.match(cells[5])
        if target is None or cells[4] in ("–", ""):
            continue
        found.append(
            Bar(section, cells[0], float(cells[4]), target.group(1), float(target.group(2)), cells[6] == "yes")
        )
    return found


def _x(ratio: float) -> float:
    return LABEL_WIDTH + BAR_WIDTH * min(ratio, SCALE_MAX) / SCALE_MAX


def svg(found: list[Bar]) -> str:
    """The chart as an SVG document."""
    rows: list[str] = []
    y = 30
    section = None
    for bar in found:
        if bar.section != section:
            section = bar.section
            y += 8
            rows.append(f'<text x="4" y="{y + 12}" font-weight="bold">{escape(section)}</text>')
            y += ROW_HEIGHT
        label = bar.what if len(bar.what) <= 72 else bar.what[:71] + "…"
        colour = "#4a7ebb" if bar.met else "#d9822b"
        rows += [
            f'<text x="14" y="{y + 12}">{escape(label)}</text>',
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{_x(bar.ratio) - LABEL_WIDTH:.1f}" height="11" '
            f'fill="{colour}"><title>{escape(bar.what)}: {bar.ratio:.3f} '
            f"(target {escape(bar.op)} {bar.bound:g})</title></rect>",
            f'<line x1="{_x(bar.bound):.1f}" x2="{_x(bar.bound):.1f}" y1="{y + 1}" y2="{y + 16}" '
            'stroke="black" stroke-width="2"/>',
            f'<text x="{LABEL_WIDTH + BAR_WIDTH + 8}" y="{y + 12}">{bar.ratio:.3f}</text>',
        ]
        y += ROW_HEIGHT
    one = _x(1.0)
    width = LABEL_WIDTH + BAR_WIDTH + 60
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 10}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="4" y="16">rls_tenancy / baseline, each judged ratio (bar), its target (tick); '
        f"orange: target missed. {sum(b.met for b in found)} of {len(found)} met.</text>",
        f'<line x1="{one:.1f}" x2="{one:.1f}" y1="24" y2="{y}" stroke="#888" stroke-dasharray="3,3"/>',
    ]
    return "\n".join([*head, *rows, "</svg>", ""])


def write(report_path: Path, chart_path: Path) -> int:
    """Draw ``report_path``'s ratios into ``chart_path``; the number of bars."""
    found = bars(report_path.read_text())
    chart_path.write_text(svg(found))
    return len(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chart", description=__doc__)
    here = Path(__file__).parent
    parser.add_argument("report", type=Path, nargs="?", default=here / "RESULTS.md")
    parser.add_argument("chart", type=Path, nargs="?", default=here / "RESULTS.svg")
    args = parser.parse_args(argv)
    print(f"{write(args.report, args.chart)} ratios drawn into {args.chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
