"""The demo app factory: plain SQLAlchemy 2.x, Flask, and the rls_tenancy extension."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import scoped_session, sessionmaker
from werkzeug.exceptions import HTTPException

from rls_tenancy import TenantQuery
from rls_tenancy.flask import Tenancy
from saas_demo import features as _declared  # noqa: F401 - declares the demo's feature flags
from saas_demo.api import api

tenancy = Tenancy()


def create_app(
    database_url: str | URL,
    bypass_url: str | URL | None = None,
    *,
    engine_options: Mapping[str, Any] | None = None,
    **config: Any,
) -> Flask:
    """The demo app on ``database_url`` (the application role's URL).

    ``engine_options`` go to ``create_engine`` over the defaults (pool sizes,
    ``connect_args``...).
    """
    app = Flask("saas_demo")
    app.config.update(
        SECRET_KEY=secrets.token_hex(32),
        MAX_CONTENT_LENGTH=64 * 1024,
        RLS_TENANCY_LANGUAGES=["en", "de", "fr"],
        RLS_TENANCY_DEFAULT_LANGUAGE="en",
    )
    app.config.update(config)
    engine = create_engine(database_url, **{"pool_size": 10, "max_overflow": 20, **(engine_options or {})})
    sessions = scoped_session(sessionmaker(engine, query_cls=TenantQuery))
    tenancy.init_app(
        app,
        engine=engine,
        session=sessions,
        bypass_engine=None if bypass_url is None else create_engine(bypass_url),
    )
    app.register_blueprint(api)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app


def _http_error(error: HTTPException) -> ResponseReturnValue:
    name = (error.name or "error").lower().replace(" ", "_")
    return jsonify(error=name, message=error.description), error.code or 500


def _unexpected(error: Exception) -> ResponseReturnValue:
    if isinstance(error, HTTPException):
        return _http_error(error)
    return jsonify(error="internal_error", message="something went wrong on our side"), 500
