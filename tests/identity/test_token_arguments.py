"""The token functions refuse arguments of the wrong type with UsageError, before the database sees them.

Not a TypeError from deep inside, and never a value PostgreSQL coerces:
``revoke_token(s, 1.5)`` would revoke token 2, ``revoke_token(s, "3")`` token 3.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from rls_tenancy import as_tenant
from rls_tenancy.errors import UsageError
from rls_tenancy.identity.tokens import authenticate_token, issue_token, parse_token, revoke_token
from tests.conftest import World

BAD_CALLS: dict[str, Callable[[Connection], Any]] = {
    "issue-scopes-none": lambda s: issue_token(s, name="n", scopes=None),  # type: ignore[arg-type]
    "issue-scopes-int": lambda s: issue_token(s, name="n", scopes=3),  # type: ignore[arg-type]
    "issue-expires-text": lambda s: issue_token(s, name="n", scopes=["a"], expires_at="2030-01-01"),  # type: ignore[arg-type]
    "issue-expires-naive": lambda s: issue_token(s, name="n", scopes=["a"], expires_at=datetime(2030, 1, 1)),  # noqa: DTZ001
    "issue-user-text": lambda s: issue_token(s, name="n", scopes=["a"], user_id="1"),  # type: ignore[arg-type]
    "issue-user-bool": lambda s: issue_token(s, name="n", scopes=["a"], user_id=True),
    "issue-user-beyond-bigint": lambda s: issue_token(s, name="n", scopes=["a"], user_id=2**63),
    "issue-key-text": lambda s: issue_token(s, name="n", scopes=["a"], key="secret"),  # type: ignore[arg-type]
    "authenticate-none": lambda s: authenticate_token(s, None),  # type: ignore[arg-type]
    "authenticate-int": lambda s: authenticate_token(s, 12),  # type: ignore[arg-type]
    "parse-bytes": lambda _s: parse_token(b"rlst_1_" + b"A" * 43),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_wrong_arguments_are_a_usage_error_before_any_statement(app_engine: Engine, world: World, case: str) -> None:
    with as_tenant(world.a), app_engine.connect() as connection:
        with pytest.raises(UsageError):
            BAD_CALLS[case](connection)
        assert not connection.in_transaction()  # any statement would have begun one


@pytest.mark.parametrize("token_id", [1.5, "3", True, 0, -1, 2**63, 2**70, None])
def test_revoke_token_takes_only_a_token_id_and_revokes_nothing_else(
    app_engine: Engine, world: World, token_id: object
) -> None:
    with as_tenant(world.a), Session(app_engine) as session, session.begin():
        issued = [issue_token(session, name=f"t{i}", scopes=["a"]) for i in range(3)]
    with as_tenant(world.a), Session(app_engine) as session, session.begin():
        with pytest.raises(UsageError, match="token_id must be a token's id"):
            revoke_token(session, token_id)  # type: ignore[arg-type]
    with as_tenant(world.a), Session(app_engine) as session, session.begin():
        for token in issued:  # every one still valid
            assert authenticate_token(session, token.token).token_id == token.id


def test_the_right_arguments_still_work(app_engine: Engine, world: World) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    with as_tenant(world.a), Session(app_engine) as session, session.begin():
        issued = issue_token(session, name="fine", scopes=("a", "b"), expires_at=later)
        assert authenticate_token(session, issued.token).scopes == {"a", "b"}
        assert revoke_token(session, issued.id)
