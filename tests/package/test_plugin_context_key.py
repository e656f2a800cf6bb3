"""A context key in the environment, in a run whose test databases are not signed.

Every engine bound in the process signs with ``$RLS_TENANCY_CONTEXT_KEY``.
In an unsigned run the plugin's databases hold no key, so each connection
raises ``ContextKeyError``, whose own advice (install the key there) fits a
real database only: under pytest, the plugin adds a note naming the two
fixes, unsetting the key or ``RLS_TENANCY_TEST_SIGNED=1``.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL

from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.binding.signing import ENVIRONMENT
from rls_tenancy.errors import ContextKeyError, UsageError
from rls_tenancy.testing import ENV_URL
from rls_tenancy.testing.database import SIGNED_ENVIRONMENT
from rls_tenancy.testing.plugin import UNSIGNED_RUN_NOTE, explain_context_key_error

SUITE = """
from sqlalchemy import create_engine, text

from rls_tenancy import as_tenant, bind_engine


def test_a_bound_engine_connects(rls_database):
    engine = bind_engine(create_engine(rls_database.app_url))
    try:
        with as_tenant(1), engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
"""


@pytest.fixture()
def keyed_suite(pytester: pytest.Pytester, rls_postgres_url: URL, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An app's suite on this run's server, with a context key exported as signed-context.md says."""
    monkeypatch.setenv(ENV_URL, rls_postgres_url.render_as_string(hide_password=False))
    monkeypatch.setenv(ENVIRONMENT, str(ContextKey.generate()))
    pytester.makepyfile(test_keyed=SUITE)
    return pytester


def test_an_unsigned_run_with_a_key_exported_says_what_to_do(
    keyed_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SIGNED_ENVIRONMENT, raising=False)
    result = keyed_suite.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ContextKeyError: the engine's context key is for slot 1*"])
    output = result.stdout.str()
    assert f"Unset {ENVIRONMENT} for an unsigned run, or set {SIGNED_ENVIRONMENT}=1" in output


def test_the_same_run_signed_passes(keyed_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIGNED_ENVIRONMENT, "1")
    keyed_suite.runpytest_subprocess().assert_outcomes(passed=1)


def test_the_note_goes_on_the_error_raised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENVIRONMENT, str(ContextKey.generate()))
    monkeypatch.delenv(SIGNED_ENVIRONMENT, raising=False)
    try:
        try:
            raise ContextKeyError("holds no key in this database")
        except ContextKeyError as cause:
            raise RuntimeError("a fixture failed") from cause
    except RuntimeError as error:
        explain_context_key_error(error)
        explain_context_key_error(error)  # a session fixture's error is raised again for every test
        assert error.__notes__ == [UNSIGNED_RUN_NOTE]


@pytest.mark.parametrize(
    ("key", "signed", "error"),
    [
        (None, None, ContextKeyError("no key")),  # no key in the environment: the error's advice stands
        ("key", "1", ContextKeyError("no key")),  # a signed run installs the environment's key
        ("key", None, UsageError("something else")),
    ],
)
def test_no_note_where_the_run_does_not_explain_it(
    monkeypatch: pytest.MonkeyPatch, key: str | None, signed: str | None, error: Exception
) -> None:
    for name, value in ((ENVIRONMENT, key), (SIGNED_ENVIRONMENT, signed)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(ContextKey.generate()) if name == ENVIRONMENT else value)
    explain_context_key_error(error)
    assert not hasattr(error, "__notes__")
