"""The library's errors as JSON responses: 401, 403, 404, 400; never a 500.

Registered by :class:`~rls_tenancy.flask.Tenancy` for its own error classes,
and for SQLAlchemy's ``OperationalError`` and pool ``TimeoutError``: a lost
connection, a restarting server, a full pool or a statement timeout is a 503
with ``Retry-After``, not a 500 (see :mod:`rls_tenancy.unavailable`). The
host app's other error pages are left as they are.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify
from sqlalchemy import exc

from rls_tenancy.errors import (
    AuthenticationError,
    InvalidRequestError,
    NoTenantError,
    PermissionDeniedError,
    TenantMismatchError,
    UnknownTenantError,
)
from rls_tenancy.unavailable import unavailable_reason

REALM = "api"


def _json(status: int, error: str, message: str, **extra: object) -> Response:
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = status
    return response


def _quoted(text: str) -> str:
    # RFC 6750 error_description: printable ASCII without quote or backslash.
    return "".join(c for c in text if c.isascii() and c.isprintable() and c not in '"\\')


def _unauthenticated(error: AuthenticationError) -> Response:
    response = _json(401, "unauthorized" if error.reason == "missing" else "invalid_token", str(error))
    challenge = f'Bearer realm="{REALM}"'
    if error.reason != "missing":
        challenge += f', error="invalid_token", error_description="{_quoted(str(error))}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def _no_tenant(_error: NoTenantError) -> Response:
    return _unauthenticated(AuthenticationError("missing", "this needs credentials: a bearer token or a login"))


def _forbidden(error: PermissionDeniedError) -> Response:
    response = _json(403, "insufficient_scope", str(error), required=sorted(error.missing))
    response.headers["WWW-Authenticate"] = (
        f'Bearer realm="{REALM}", error="insufficient_scope", scope="{" ".join(sorted(error.missing))}"'
    )
    return response


def _mismatch(error: TenantMismatchError) -> Response:
    return _json(403, "tenant_mismatch", "that object belongs to another tenant")


def _unknown_tenant(error: UnknownTenantError) -> Response:
    return _json(404, "unknown_tenant", str(error))


def _invalid(error: InvalidRequestError) -> Response:
    return _json(400, "invalid_request", str(error))


def _unavailable(error: exc.OperationalError | exc.TimeoutError) -> Response:
    reason = unavailable_reason(error) or "the database is unavailable"
    current_app.logger.warning("database unavailable (%s): %s", reason, error)
    response = _json(503, "database_unavailable", f"{reason}; try again shortly")
    response.headers["Retry-After"] = "1"
    return response


def register_error_handlers(app: Flask) -> None:
    """JSON answers for the library's errors raised while handling a request."""
    app.register_error_handler(AuthenticationError, _unauthenticated)
    app.register_error_handler(NoTenantError, _no_tenant)
    app.register_error_handler(PermissionDeniedError, _forbidden)
    app.register_error_handler(TenantMismatchError, _mismatch)
    app.register_error_handler(UnknownTenantError, _unknown_tenant)
    app.register_error_handler(InvalidRequestError, _invalid)
    app.register_error_handler(exc.OperationalError, _unavailable)
    app.register_error_handler(exc.TimeoutError, _unavailable)
