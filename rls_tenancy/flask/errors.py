"""The library's errors as JSON responses: 401, 403, 404, 409, 400; never an HTML 500.

Registered by :class:`~rls_tenancy.flask.Tenancy` for its own error classes,
and for SQLAlchemy's ``OperationalError`` and pool ``TimeoutError``: a lost
connection, a restarting server, a full pool or a statement timeout is a 503
with ``Retry-After``, not a 500 (see :mod:`rls_tenancy.binding.unavailable`).

Input the database cannot take is a 400, not a 500, so that a view written
naively (``<int:id>`` against an ``integer`` column, a form's text straight
into a model) answers hostile input as the client's mistake: SQLAlchemy's
``DataError`` (SQLSTATE class 22, and psycopg's own refusal of NUL
characters), text with a lone surrogate (valid JSON, but no UTF-8 encodes
it), and a :class:`~rls_tenancy.UsageError` raised while the request is
handled (a model's validator refusing an email, say), except an
:class:`~rls_tenancy.AmbiguousTenantError` or a
:class:`~rls_tenancy.ConfigurationError`: the code's own mistake (a
thread started while a generator's ``as_tenant`` block was suspended, a
pool that shares a connection), whatever the client sent, so a 500 like
the other bugs, and its message, which may name another tenant, stays in
the server's log. A
:class:`~rls_tenancy.UnknownFeatureError` stays a 400: an app may pass it a
key the client sent, and its message quotes only that key. A constraint the
row breaks (SQLAlchemy's ``IntegrityError``) is a 409 ``conflict`` for a
unique or exclusion constraint, a 400 for the rest (a missing value, a
check, a reference to no row of the tenant's). Each names the database's
condition and constraint, never its message, which may quote stored values.
A flush or ORM bulk write that finds fewer rows than it named (SQLAlchemy's
``StaleDataError``: a version counter that moved, a row deleted meanwhile,
an id of another tenant's row, which row level security hides) is a 409
``conflict``.

A write that row level security refuses, or any other refusal with SQLSTATE
42501 (``insufficient_privilege``, also raised by the library's own SQL
functions), is a 403; an exception an app's trigger or function raises
without a SQLSTATE of its own (``P0001``) is a 400. A JSON body nested too
deeply to parse (Python's ``RecursionError``) is a 400. Any other database
or library failure is a bug of the server: it goes on to Flask's 500
handling (logged, and raised in testing), whose answer is JSON. A library
error SQLAlchemy wrapped in its ``StatementError`` (raised while a statement
was compiled) is answered as that error.

A handler the app registered itself for one of these classes, before or
after ``init_app``, is left in place; so is one for a broader class, such
as ``Exception``, for the failures that are bugs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import exc
from sqlalchemy.orm import exc as orm_exc
from werkzeug.exceptions import InternalServerError

from rls_tenancy.binding.unavailable import unavailable_reason
from rls_tenancy.errors import (
    AmbiguousTenantError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    NoTenantError,
    PermissionDeniedError,
    TenancyError,
    TenantMismatchError,
    UnknownTenantError,
    UsageError,
)
from rls_tenancy.flask.state import request_state, roll_back_request_sessions, state

REALM = "api"


def _json(status: int, error: str, message: str, **extra: object) -> Response:
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = status
    return response


#: What RFC 6750's error_description may not hold: anything but printable ASCII, a quote, a backslash.
_UNQUOTABLE = re.compile(r"[^ !#-\[\]-~]")


def _quoted(text: str) -> str:
    # One pass in C: every rejected token's answer goes through it.
    return _UNQUOTABLE.sub("", text)


def _unauthenticated(error: AuthenticationError) -> Response:
    response = _json(401, "unauthorized" if error.reason == "missing" else "invalid_token", str(error))
    challenge = f'Bearer realm="{REALM}"'
    if error.reason != "missing":
        challenge += f', error="invalid_token", error_description="{_quoted(str(error))}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def _no_tenant(error: NoTenantError) -> ResponseReturnValue:
    if request_state().resolution is not None:
        # The request has a tenant, and code lost it (a thread of its own without the request's
        # context, say): the server's mistake, not missing credentials.
        return _passed_on(error, NoTenantError)
    # On an app whose hosts name tenants, a request that resolved nothing came to a host that names
    # none (the bare domain): no such page, whatever credentials would add.
    if state().host_resolver is not None:
        parent = current_app.config["RLS_TENANCY_SUBDOMAIN_OF"]
        return _json(404, "no_tenant", f"this host names no tenant: use <tenant>.{parent}")
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


#: Raised by the code, whatever the client sent: bugs of the server, whose messages may name other tenants.
_PROGRAMMING_ERRORS: tuple[type[UsageError], ...] = (AmbiguousTenantError, ConfigurationError)


def _usage(error: UsageError) -> ResponseReturnValue:
    if isinstance(error, _PROGRAMMING_ERRORS):  # a 500, its message only in the server's log
        return _passed_on(error, UsageError)
    current_app.logger.warning("request refused for a usage error: %s", error)
    return _json(400, "invalid_request", str(error))


def _bad_value(error: exc.DataError) -> Response:
    current_app.logger.warning("request refused for a value the database cannot take: %s", error.orig)
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is None:  # refused by psycopg before sending (NUL in text): its message quotes no data
        reason = str(error.orig)
    else:
        reason = _words(type(error.orig).__name__)
    return _json(400, "invalid_request", f"the database cannot take a value of this request: {reason}")


# Conflicts with a row that exists; the rest of class 23 is the request's own value.
_CONFLICTS = frozenset({"23505", "23P01"})  # unique_violation, exclusion_violation


def _constraint_broken(error: exc.IntegrityError) -> Response:
    current_app.logger.warning("request refused for a constraint it breaks: %s", error.orig)
    diagnostic = getattr(error.orig, "diag", None)
    constraint = getattr(diagnostic, "constraint_name", None)
    sqlstate = getattr(error.orig, "sqlstate", None)
    reason = _words(type(error.orig).__name__) + (f" ({constraint})" if constraint else "")
    if sqlstate in _CONFLICTS:
        return _json(409, "conflict", f"this conflicts with a row that exists: {reason}")
    return _json(400, "invalid_request", f"the database refuses a row of this request: {reason}")


def _stale(error: orm_exc.StaleDataError) -> Response:
    """A flush or ORM bulk write that found fewer rows than it named: gone, changed, or another tenant's."""
    current_app.logger.warning("request refused for rows it did not find: %s", error)
    return _json(
        409,
        "conflict",
        "a row this request changes or deletes is not there as it expected: "
        "deleted or changed meanwhile, or never there for this tenant",
    )


def _words(condition: str) -> str:
    """``NumericValueOutOfRange`` -> ``numeric value out of range``: psycopg names its classes after conditions."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", condition).lower()


def _unencodable(error: UnicodeEncodeError) -> ResponseReturnValue:
    if error.reason != "surrogates not allowed":  # not the client's text: a bug, a 500 as before
        return _passed_on(error, UnicodeEncodeError)
    return _json(400, "invalid_request", "text must be valid Unicode: a lone surrogate cannot be stored")


def _refused(error: exc.DBAPIError) -> ResponseReturnValue:
    """A refusal the database names by SQLSTATE; the classes handled above are more specific and win.

    Neither answer quotes the database's message: a policy's or a function's
    may name rows, ids or values of any tenant.
    """
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate == "42501":  # insufficient_privilege: a row level security WITH CHECK, a library function
        current_app.logger.warning("request refused by the database's access rules: %s", error.orig)
        return _json(403, "forbidden", "the database refuses this request: its access rules forbid it")
    if sqlstate == "P0001":  # raise_exception: the app's own trigger or function said no, as a check would
        current_app.logger.warning("request refused by a database function: %s", error.orig)
        return _json(400, "invalid_request", "the database refuses this request: a database function raised an error")
    if _unadaptable(error):
        current_app.logger.warning("request refused for a value of a type the driver cannot send: %s", error.orig)
        return _json(400, "invalid_request", "a value of this request has a type the database cannot take")
    return _passed_on(error, exc.DBAPIError)


def _unadaptable(error: exc.DBAPIError) -> bool:
    """psycopg's refusal, before sending, of a value it has no adapter for: a JSON object where text goes.

    The request's value, passed on unchecked, as a ``DataError`` is; its
    message names only the Python type.
    """
    orig = error.orig
    return (
        isinstance(orig, psycopg.ProgrammingError)
        and orig.sqlstate is None
        and str(orig).startswith("cannot adapt type")
    )


def _wrapped(error: exc.StatementError) -> ResponseReturnValue:
    """A library error SQLAlchemy wrapped, answered as itself: a 403 for another tenant's object, not a 500.

    SQLAlchemy wraps what is raised while it compiles a statement, such as
    the refresh of an expired object in its criteria (``with_parent()``,
    ``Task.project == project``) that finds the row another tenant's.
    """
    if isinstance(error.orig, TenancyError):
        # The handler for that error (the app's own, or the library's); without one, on as a 500.
        return current_app.handle_user_exception(error.orig)
    return _passed_on(error, exc.StatementError)


def _too_deep(error: RecursionError) -> ResponseReturnValue:
    """A JSON document nested deeper than Python's recursion limit, as ``get_json(silent=True)`` lets through."""
    if not _raised_decoding_json(error):
        return _passed_on(error, RecursionError)
    return _json(400, "invalid_request", "the JSON body is nested too deeply")


def _raised_decoding_json(error: BaseException) -> bool:
    """Whether ``error`` came out of the standard library's JSON decoder (not its encoder, not the app)."""
    trace = error.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    return trace.tb_frame.f_globals.get("__name__") in ("json.decoder", "json.scanner")


def _passed_on(error: Exception, handled_as: type[Exception]) -> ResponseReturnValue:
    """``error`` to the app's own handler for a class broader than ``handled_as``, else on as a 500.

    Raised again, it reaches Flask's 500 handling as if unhandled: logged
    with its traceback, sent to ``got_request_exception`` (error
    trackers), raised in testing, and answered by :func:`_server_error`.
    """
    handler = _broader_handler(type(error), handled_as)
    if handler is None:
        raise error
    return current_app.ensure_sync(handler)(error)  # type: ignore[no-any-return]


def _broader_handler(error_class: type[Exception], handled_as: type[Exception]) -> Callable[..., Any] | None:
    """The app's own handler for the first class of ``error_class`` broader than ``handled_as``, if any."""
    own = current_app.error_handler_spec[None][None]
    classes = error_class.__mro__
    return next(
        (own[broader] for broader in classes[classes.index(handled_as) + 1 :] if broader in own),
        None,
    )


def _server_error(error: InternalServerError) -> ResponseReturnValue:
    """JSON for a 500 a database or library failure caused; for the rest, what Flask answers without it.

    Registered only when the app has no 500 handler of its own; one the
    app registers later replaces it.
    """
    if isinstance(error.original_exception, exc.SQLAlchemyError | TenancyError):
        return _json(500, "internal_error", "the server failed to handle this request")
    if _broader_handler(InternalServerError, InternalServerError) is None:
        return error  # Flask's own page, as before
    return _passed_on(error, InternalServerError)


_HANDLERS: list[tuple[type[Exception], Callable[[Any], ResponseReturnValue]]] = [
    (AuthenticationError, _unauthenticated),
    (NoTenantError, _no_tenant),
    (PermissionDeniedError, _forbidden),
    (TenantMismatchError, _mismatch),
    (UnknownTenantError, _unknown_tenant),
    (InvalidRequestError, _invalid),
    (UsageError, _usage),
    (exc.OperationalError, _unavailable),
    (exc.TimeoutError, _unavailable),
    (exc.DataError, _bad_value),
    (exc.IntegrityError, _constraint_broken),
    (orm_exc.StaleDataError, _stale),
    (UnicodeEncodeError, _unencodable),
    (exc.DBAPIError, _refused),
    (exc.StatementError, _wrapped),
    (RecursionError, _too_deep),
]


#: Raised by the database or the ORM's work with it: the request's transaction cannot go on.
_DATABASE_ERRORS = (exc.SQLAlchemyError, orm_exc.StaleDataError)


def _after_rollback(handler: Callable[[Any], ResponseReturnValue]) -> Callable[[Any], ResponseReturnValue]:
    """``handler``, after the request's Sessions roll back what failed.

    The failed transaction can commit nothing; left open, the first query of
    an ``after_request`` hook or a ``get_current_tenant()`` there would fail
    on it, and the 4xx turn into a 500.
    """

    def answer(error: Any) -> ResponseReturnValue:
        if isinstance(error, _DATABASE_ERRORS):
            roll_back_request_sessions()
        return handler(error)

    return answer


def register_error_handlers(app: Flask) -> None:
    """JSON answers for the library's errors raised while handling a request; the app's own handlers win."""
    own = app.error_handler_spec[None][None]  # the app-wide handlers by exception class
    for error_class, handler in _HANDLERS:
        if error_class not in own:
            app.register_error_handler(error_class, _after_rollback(handler))
    if not app.error_handler_spec[None][500]:
        app.register_error_handler(500, _server_error)
