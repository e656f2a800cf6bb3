"""The application factory: flaskr's ``create_app``, with an engine, a session and the Flask extension."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import create_engine
from sqlalchemy.orm import scoped_session, sessionmaker
from werkzeug.exceptions import HTTPException

from rls_tenancy import TenantQuery
from rls_tenancy.binding import database_url
from rls_tenancy.flask import Tenancy
from tenant_blog import auth, blog

tenancy = Tenancy()


# tutorial: create-app
def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """The blog. Settings come from ``FLASK_*`` environment variables, or ``test_config`` in tests."""
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY="dev",  # signs the login cookie: set FLASK_SECRET_KEY in production
        MAX_CONTENT_LENGTH=64 * 1024,
        # Who is logged in comes from the signed cookie; which blog it is, from the host: acme.localhost
        # is tenant acme's blog (browsers send *.localhost to this machine). Credentials of another tenant
        # than the host's are refused.
        RLS_TENANCY_RESOLVERS=["session", "subdomain"],
        RLS_TENANCY_SUBDOMAIN_OF="localhost",
    )
    if test_config is None:
        # FLASK_DATABASE_URL (the application role's URL), FLASK_RLS_TENANCY_BYPASS_DATABASE_URL (for the CLI)...
        app.config.from_prefixed_env()
    else:
        app.config.from_mapping(test_config)

    engine = create_engine(database_url(app.config.get("DATABASE_URL")))  # else $DATABASE_URL; psycopg 3
    sessions = scoped_session(sessionmaker(engine, query_cls=TenantQuery))
    tenancy.init_app(app, engine=engine, session=sessions)  # binds the engine, scopes the sessions
    app.register_blueprint(auth.bp)
    app.register_blueprint(blog.bp)
    app.register_error_handler(HTTPException, _json_error)
    return app


# tutorial: end create-app


def _json_error(error: HTTPException) -> ResponseReturnValue:
    """abort(404) and friends as JSON, like the extension's own errors."""
    name = (error.name or "error").lower().replace(" ", "_")
    return jsonify(error=name, message=error.description), error.code or 500
