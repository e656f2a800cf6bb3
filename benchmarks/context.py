"""What every section gets: the scale, a PostgreSQL server, a progress log."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import URL

from benchmarks.harness import Scale
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import tenancy_database

DEMO_ALEMBIC_INI = Path(__file__).parent.parent / "examples" / "saas_demo" / "alembic.ini"


@dataclass(frozen=True)
class Context:
    scale: Scale
    server_url: URL  # a superuser's
    started: float

    def pick(self, smoke: int, quick: int, full: int) -> int:
        """A count for this run's scale."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.scale]

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    @contextmanager
    def library_database(self) -> Iterator[TenancyDatabase]:
        """A fresh database with only the library's schema, dropped afterwards."""
        with tenancy_database(self.server_url) as db:
            yield db

    @contextmanager
    def demo_database(self) -> Iterator[TenancyDatabase]:
        """A fresh database migrated as the demo app (projects, tasks), dropped afterwards."""
        with tenancy_database(self.server_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as db:
            yield db
