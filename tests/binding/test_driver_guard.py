"""The psycopg connection under a bound Connection is held to its binding, like SQLAlchemy's statements."""

from __future__ import annotations

import asyncio
import io

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from rls_tenancy import TenantChangedError, as_tenant, bind_engine
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World

NAMES = "SELECT name FROM projects ORDER BY name"


def _copied(driver: object) -> set[str]:
    out = io.StringIO()
    with driver.cursor().copy("COPY (SELECT name FROM projects) TO STDOUT") as copy:  # type: ignore[attr-defined]
        for chunk in copy:
            out.write(bytes(chunk).decode())
    return set(out.getvalue().split())


@pytest.mark.rls_binding
def test_the_driver_refuses_to_run_for_the_old_tenant_after_a_switch(pinned_engine: Engine, world: World) -> None:
    with as_tenant(world.a), pinned_engine.connect() as conn:
        conn.execute(text(NAMES)).all()  # bound to A
        driver = conn.connection.driver_connection
        assert _copied(driver) == world.projects[world.a]  # the driver in A's context: A's rows, as before
        with as_tenant(world.b):
            with pytest.raises(TenantChangedError, match=f"bound to tenant {world.a}"):
                _copied(driver)
            with pytest.raises(TenantChangedError):
                driver.execute(NAMES)  # type: ignore[union-attr]
            with pytest.raises(TenantChangedError):
                driver.cursor().executemany("SELECT %s", [(1,)])  # type: ignore[union-attr]
            with pytest.raises(TenantChangedError):
                list(driver.cursor().stream(NAMES))  # type: ignore[union-attr]
            with driver.cursor("named") as named, pytest.raises(TenantChangedError):  # type: ignore[union-attr]
                named.execute(NAMES)
        conn.rollback()
        with as_tenant(world.b):  # the transaction ended: the driver's next one is bound to nobody
            assert driver.execute(NAMES).fetchall() == []  # type: ignore[union-attr]


def test_the_asyncio_driver_refuses_too(db: TenancyDatabase, world: World) -> None:
    async def scenario() -> None:
        engine = bind_engine(create_async_engine(db.app_url, pool_size=1, max_overflow=0))
        try:
            async with engine.connect() as conn:
                with as_tenant(world.a):
                    await conn.execute(text(NAMES))
                    raw = await conn.get_raw_connection()
                    driver = raw.driver_connection
                    with as_tenant(world.b), pytest.raises(TenantChangedError):
                        await driver.execute(NAMES)  # type: ignore[union-attr]
                    assert {r[0] for r in await (await driver.execute(NAMES)).fetchall()} == world.projects[world.a]  # type: ignore[union-attr]
                    await conn.rollback()
        finally:
            await engine.dispose()

    asyncio.run(scenario())
