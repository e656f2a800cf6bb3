"""pytest fixtures for a real PostgreSQL, and the sabotage runs; see :mod:`rls_tenancy.testing`."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator

import pytest
from alembic.config import Config
from sqlalchemy.engine import URL

from rls_tenancy.binding.signing import ENVIRONMENT
from rls_tenancy.errors import ContextKeyError
from rls_tenancy.testing._sabotage import (
    MARKERS,
    break_process,
    open_every_policy,
    restore_process,
    skip_signature_check,
)
from rls_tenancy.testing.database import SIGNED_ENVIRONMENT, TenancyDatabase, signing_requested, tenancy_database
from rls_tenancy.testing.server import postgres_server

_CLAIMS = {
    "policy": "the row level security policies",
    "binding": "the per-transaction binding: the tenant transaction-local, the session reset between tenants",
    "orm": "the ORM tenant filter",
    "signing": "the signed tenant context: PostgreSQL checks the proof beside the bound tenant",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rls-break",
        choices=sorted(MARKERS),
        help="break one isolation layer on purpose and run only the tests marked as guarding it; each must fail",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Before conftest files import the application, which may scope its sessions as it loads.
    break_process(early_config.known_args_namespace.rls_break)


def pytest_configure(config: pytest.Config) -> None:
    for layer, marker in MARKERS.items():
        config.addinivalue_line(
            "markers", f"{marker}: a claim that rests on {_CLAIMS[layer]}; must fail under --rls-break={layer}"
        )
    break_process(config.getoption("rls_break"))  # again, for a plugin loaded by a conftest's pytest_plugins


def pytest_unconfigure(config: pytest.Config) -> None:
    restore_process()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--rls-break``, keep only the tests guarding the broken layer, as strict xfails."""
    layer = config.getoption("rls_break")
    if layer is None:
        return
    guarding: list[pytest.Item] = []
    others: list[pytest.Item] = []
    for item in items:
        (guarding if item.get_closest_marker(MARKERS[layer]) else others).append(item)
    reason = f"--rls-break={layer}: {_CLAIMS[layer]} broken on purpose"
    for item in guarding:
        # First, so it is the xfail that counts: one that passes anyway proves nothing and fails the run.
        item.add_marker(pytest.mark.xfail(strict=True, reason=reason), append=False)
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = guarding


#: Added to a ContextKeyError raised in an unsigned run while the environment holds a context key.
UNSIGNED_RUN_NOTE = (
    f"rls_tenancy's pytest plugin: ${ENVIRONMENT} is set, so every engine the tests bind signs with it, "
    f"but this run's test databases require no signed context and hold no key ({SIGNED_ENVIRONMENT} is not set). "
    f"Unset {ENVIRONMENT} for an unsigned run, or set {SIGNED_ENVIRONMENT}=1 to run signed with that key."
)


def explain_context_key_error(error: BaseException) -> None:
    """Add :data:`UNSIGNED_RUN_NOTE` to a ContextKeyError (or one it was raised from) when the run explains it.

    The error's own advice (install the key in the database) fits a real
    database, not one the plugin made for this run.
    """
    if not os.environ.get(ENVIRONMENT) or signing_requested():
        return
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ContextKeyError):
            if UNSIGNED_RUN_NOTE not in getattr(error, "__notes__", ()):  # a fixture's error is raised for each test
                error.add_note(UNSIGNED_RUN_NOTE)
            return
        cause = cause.__cause__ or cause.__context__


def _explaining() -> Generator[None, None, None]:
    """A test phase, its context key error explained as it goes by."""
    try:
        return (yield)
    except Exception as error:
        explain_context_key_error(error)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _explaining())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _explaining())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    return (yield from _explaining())


@pytest.fixture(scope="session")
def rls_postgres_url() -> Iterator[URL]:
    """Superuser URL of the session's PostgreSQL server."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def rls_alembic_config() -> Config | None:
    """Override to return your app's Alembic config; ``rls_database`` upgrades it to heads."""
    return None


def break_database(config: pytest.Config, database_url: URL) -> None:
    """Break ``database_url`` as this run's ``--rls-break`` says; the other layers break in the process.

    ``policy``: every policy in it lets everything through; ``signing``: it
    takes the bound tenant without its proof.
    """
    layer = config.getoption("rls_break")
    if layer == "policy":
        open_every_policy(database_url)
    if layer == "signing":
        skip_signature_check(database_url)


@pytest.fixture(scope="session")
def rls_break_database(pytestconfig: pytest.Config) -> Callable[[URL], None]:
    """For a database your fixtures make themselves: ``rls_break_database(db.superuser_url)`` once migrated.

    ``rls_database`` is broken this way already; a second database (another
    app's, one per module) is not unless its fixture calls this, and the
    tests marked for a layer would then pass under its break and fail the run.
    """
    return lambda database_url: break_database(pytestconfig, database_url)


@pytest.fixture(scope="session")
def rls_database(
    rls_postgres_url: URL, rls_alembic_config: Config | None, pytestconfig: pytest.Config
) -> Iterator[TenancyDatabase]:
    """A fresh, migrated database with the owner, app and bypass roles, broken as ``--rls-break`` says."""
    with tenancy_database(rls_postgres_url, alembic_config=rls_alembic_config) as database:
        break_database(pytestconfig, database.superuser_url)
        yield database
