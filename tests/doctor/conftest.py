"""The doctor's fixtures: the shared database's report before any test, and the check that each test left it so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.doctor.support import Row, finding_rows


@pytest.fixture(scope="module")
def baseline(superuser_engine: Engine) -> list[Row]:
    with superuser_engine.connect() as conn:
        return finding_rows(conn)


@pytest.fixture()
def stays_clean(superuser_engine: Engine, baseline: list[Row]) -> Iterator[None]:
    """After the test, the shared database reports exactly what it did before: the rollback undid it all."""
    yield
    with superuser_engine.connect() as conn:
        assert finding_rows(conn) == baseline
