"""docs/tutorial.md, section 6: ``@require_scopes()`` is flaskr's ``@login_required`` only with the blog's resolvers.

With the default resolvers, ``["token", "session"]``, a token issued
without a user holds scopes of its own and passes ``require_scopes()``; the
view then has no user. A view that needs one checks ``get_current_user()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, abort, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from rls_tenancy import as_tenant
from rls_tenancy.flask import Tenancy, get_current_user, require_scopes
from rls_tenancy.identity.token_key import token_keys
from rls_tenancy.identity.tokens import issue_token
from rls_tenancy.testing import TenancyDatabase
from saas_demo.seed import Seeded


@pytest.fixture(scope="module")
def app(db: TenancyDatabase) -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test secret")  # the default resolvers: token, then session

    @app.get("/any-credentials")
    @require_scopes()
    def any_credentials() -> ResponseReturnValue:
        user = get_current_user()
        return jsonify(user=None if user is None else user.id)

    @app.get("/a-user")
    @require_scopes()
    def a_user() -> ResponseReturnValue:
        if get_current_user() is None:  # what the tutorial says a view that needs a user does
            abort(401)
        return jsonify(ok=True)

    Tenancy(app, engine=create_engine(db.app_url))
    yield app
    app.extensions["rls_tenancy"].dispose()


def test_a_token_without_a_user_passes_require_scopes_with_no_user(app: Flask, seeded: Seeded) -> None:
    keys = token_keys(None)
    with as_tenant(seeded.tenants["acme"]), Session(app.extensions["rls_tenancy"].engine) as session:
        issued = issue_token(session, name="docs: no user", scopes=["projects:read"], key=keys[0] if keys else None)
        session.commit()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {issued.token}"}
    answer = client.get("/any-credentials", headers=headers)
    assert (answer.status_code, answer.json) == (200, {"user": None})
    assert client.get("/a-user", headers=headers).status_code == 401
    assert client.get("/any-credentials").status_code == 401  # no credentials at all
