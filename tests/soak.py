"""Bounded runs in ``make test``, long runs in ``make soak``, and the figures both report.

Suites that hunt for leaks size themselves with :func:`count` and report what
they did to :data:`FIGURES`; the session prints the totals and, when
``RLS_TENANCY_FIGURES`` names a file (``make soak`` does), writes them there.
A leak or a lost write is recorded before the test fails on it, so the
figures never read "0 leaks" for a run that found one.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

SOAK = os.environ.get("RLS_TENANCY_SOAK", "") == "1"

#: The figures every report shows, in this order, even when zero.
HEADLINE = ("vectors tried", "operations", "requests", "faults injected", "leaks found", "writes lost")


def count(bounded: int, soak: int) -> int:
    """How many of something to do: ``bounded`` in ``make test``, ``soak`` in ``make soak``."""
    return soak if SOAK else bounded


class Figures:
    """Thread-safe totals for the session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._totals[name] += amount

    def totals(self) -> dict[str, int]:
        with self._lock:
            extra = sorted(set(self._totals) - set(HEADLINE))
            return {name: self._totals[name] for name in (*HEADLINE, *extra)}

    def markdown(self, title: str) -> str:
        lines = [f"# {title}", "", "| figure | count |", "|---|---:|"]
        lines += [f"| {name} | {value:,} |" for name, value in self.totals().items()]
        return "\n".join(lines) + "\n"


FIGURES = Figures()
