"""The request lifecycle the extension registers: its own context, the tenant resolved first, everything ended last.

Each request runs in a ``contextvars`` context of its own (WSGI
middleware), resolves its tenant before any view or app hook that runs
after the extension's, and ends its tenant and session in its own
teardown, even when the database is gone.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Response, current_app, has_request_context, request
from sqlalchemy import Connection, exc
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

from rls_tenancy.audit.events import REQUEST_ID_PATTERN, log_security_event, normal_ip, set_event_origin
from rls_tenancy.binding.engine import NOT_BOUND, transaction_tenant
from rls_tenancy.context import enter_request_tenant, leave_request_tenant
from rls_tenancy.errors import AuthenticationError, ConfigurationError
from rls_tenancy.features.flags import set_flags_source
from rls_tenancy.flask.resolvers import (
    Resolution,
)
from rls_tenancy.flask.state import (
    EXTENSION_KEY,
    REQUEST_KEY,
    RequestState,
    request_flags,
    request_sessions,
    request_state,
    state,
)

if TYPE_CHECKING:  # an optional dependency (extra flask-sqlalchemy)
    pass

#: Where the extension tells of audit events a request lost without failing.
audit_logger = logging.getLogger("rls_tenancy.audit")
#: Where it tells of an app's changes a request's end dropped.
changes_logger = logging.getLogger("rls_tenancy.flask")


def request_session() -> Session:
    return state().session()


def own_context(wsgi_app: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def serve(environ: Any, start_response: Any) -> Any:
        # No tenant and no user from the app's first line (converters, url
        # value preprocessors) to its last teardown, whatever surrounds the
        # request: a test client inside as_tenant(), a request made in a view.
        # The context dies with the request, so the token is never needed.
        enter_request_tenant(None)
        return wsgi_app(environ, start_response)

    @functools.wraps(wsgi_app)
    def run(environ: Any, start_response: Any) -> Any:
        context = contextvars.copy_context()
        environ[REQUEST_KEY] = RequestState(running_in=context)
        try:
            return context.run(serve, environ, start_response)
        except BaseException:
            # A teardown function that raises stops the rest (ours too) and
            # leaves Flask's wsgi_app with that error: only then is a Session left.
            context.run(_close_abandoned_session, environ)
            raise

    return run


_PROBE: contextvars.ContextVar[object] = contextvars.ContextVar("rls_tenancy.flask.probe")


def _runs_in(context: contextvars.Context) -> bool:
    """Whether the caller runs in ``context`` itself, not in a copy of it or another context.

    A value set here shows in ``context`` only if it is the current one;
    the marker is new each time, so another thread probing at once cannot
    be mistaken for this one.
    """
    marker = object()
    token = _PROBE.set(marker)
    found = context.get(_PROBE) is marker
    _PROBE.reset(token)
    return found


def _close_abandoned_session(environ: Any) -> None:
    """Close the request's Session when its teardown never ran (an app's teardown raised before it).

    Left to the garbage collector, its connection would stay checked out, in
    a transaction holding whatever locks the request took, until a cycle
    collection happened to run.
    """
    current = environ.get(REQUEST_KEY)
    if isinstance(current, RequestState):
        for session in (current.session, current.read_session):
            if session is not None:
                session.close()
        current.session = current.read_session = None


def begin_request() -> None:
    current = request_state()
    # No tenant until one is found, whatever surrounded this request.
    current.context = enter_request_tenant(None)
    given = request.headers.get(current_app.config["RLS_TENANCY_REQUEST_ID_HEADER"], "")
    current.request_id = given if REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex
    set_event_origin(_client_ip(), current.request_id)
    set_flags_source(request_flags)
    tenancy = state()
    resolution: Resolution | None = None
    for resolve in tenancy.resolvers:
        resolution = resolve(request)
        if resolution is not None:
            break
    if tenancy.host_resolver is not None:
        host = tenancy.host_resolver(request)
        if host is not None and resolution is not None and host.tenant_id != resolution.tenant_id:
            log_security_event(
                tenancy.audit_engine,
                "auth.wrong_tenant",
                "credentials used on another tenant's host",
                tenant_id=resolution.tenant_id,
                user_id=resolution.user_id,
                data={"host_tenant": host.tenant_id, "source": resolution.source},
            )
            tenancy.session().rollback()  # the resolver may have bound it to the credentials' tenant
            raise AuthenticationError("wrong_tenant", "these credentials belong to another tenant than this host")
        resolution = resolution or host
    current.resolution = resolution
    current.resolved = True
    begun, current.begun_unresolved = current.begun_unresolved, []
    if resolution is not None:
        _end_tenantless(begun, resolution.tenant_id)
        leave_request_tenant(current.context)
        current.context = enter_request_tenant(resolution.tenant_id, resolution.user_id)


def note_begun(session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    """``after_begin`` of the request's Sessions: a transaction begun before the request's tenant is resolved.

    A ``url_value_preprocessor`` runs before the extension's hook, and a
    resolver of the app's own during it: what they begin on the request's
    Session is bound to no tenant.
    """
    if has_request_context():
        current = request_state()
        if not current.resolved:
            current.begun_unresolved.append((session, connection))


def _end_tenantless(begun: list[tuple[Session, Connection]], tenant_id: int) -> None:
    """End what code before the tenant began on the request's Sessions, bound to no tenant, before it acts for one.

    Left open, the view's first statement there would find its transaction
    bound to no tenant and raise :class:`~rls_tenancy.TenantChangedError`.
    Reads are rolled back. Writes would be lost that way, silently, so they
    are refused: objects added or changed and never flushed, and anything
    the transaction wrote (it holds a transaction id). A transaction a
    resolver bound to the request's tenant (the token lookup's) stays.
    """
    for session, connection in begun:
        if connection.closed or not connection.in_transaction():
            continue
        tenant = transaction_tenant(connection)
        if tenant == tenant_id:
            continue
        if any(_unflushed(session)) or (tenant is not NOT_BOUND and _wrote(connection)):
            raise ConfigurationError(
                "the request's Session wrote before its tenant was resolved (in a url_value_preprocessor or a "
                "resolver of the app's own): its transaction is bound to no tenant, and must end before the "
                "request acts for its tenant; commit those writes there, or make them in the view"
            )
        session.rollback()


_WROTE = "SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL"


def _wrote(connection: Connection) -> bool:
    """Whether ``connection``'s transaction wrote (or locked) anything: PostgreSQL gave it a transaction id."""
    return bool(connection.exec_driver_sql(_WROTE).scalar())


def _client_ip() -> str | None:
    try:
        return normal_ip(request.remote_addr or "")
    except ValueError:  # no address, or a unix socket's path
        return None


def echo_request_id(response: Response) -> Response:
    current = request_state()
    current.status = response.status_code  # for end_request: whether the request failed
    request_id = current.request_id
    header = current_app.config["RLS_TENANCY_REQUEST_ID_HEADER"]
    if request_id is not None and header not in response.headers:
        response.headers[header] = request_id
    return response


def end_request(_error: BaseException | None) -> None:
    current = request_state()
    if current.running_in is not None:
        if not _runs_in(current.running_in):
            # A copy of the request context popped elsewhere while the request
            # runs (copy_current_request_context in a thread): the tenant's
            # token and the Session it would end are the running request's.
            return
        current.running_in = None  # ended: later pops (a stream's) close what was opened since
    _warn_of_uncommitted_events(current, failed=_error is not None)
    if _error is None and current.status is not None and current.status < 400:
        _warn_of_unflushed_changes()  # a request that failed stores nothing, as meant
    if current.context is not None:
        leave_request_tenant(current.context)
        current.context = None
    for session in (current.session, current.read_session):
        if session is not None:
            _closing_despite_outage(session.close)
    current.session = current.read_session = None
    tenancy = current_app.extensions.get(EXTENSION_KEY)
    if tenancy is not None and isinstance(tenancy.sessions, scoped_session):
        # Also Flask-SQLAlchemy's db.session: an app context kept pushed
        # across requests must not carry one request's Session into the next.
        if not _closing_despite_outage(tenancy.sessions.remove):
            tenancy.sessions.registry.clear()  # remove() stopped before forgetting it


def _warn_of_uncommitted_events(current: RequestState, *, failed: bool) -> None:
    """Warn of events ``log()`` wrote in a transaction still open, which closing the Session rolls back.

    The view committed before them, or never: the response went out as if
    they were recorded. A request that failed (an exception, a 4xx or 5xx
    answer) or that rolled back itself loses them as documented, silently.
    """
    logged, current.logged = current.logged, []
    if failed or current.status is None or current.status >= 400:
        return
    actions = list(dict.fromkeys(action for transaction, action in logged if transaction.is_active))
    if actions:
        audit_logger.warning(
            "audit event(s) %s written by log() in %s %s are lost: the view neither committed nor rolled back "
            "their transaction, and closing the request's Session rolls it back. log() commits with the view's "
            "work, so call it before the view's last commit, or use log_security_event() for an event committed "
            "at once",
            ", ".join(actions),
            request.method,
            request.path,
        )


def _warn_of_unflushed_changes() -> None:
    """Warn of objects added, changed or deleted in the request's Session and never flushed: closing drops them.

    Committed later, in a ``teardown_appcontext`` or a ``teardown_request``
    registered before :meth:`init_app`, they would find the Session closed
    by then, and the response already sent as if they were stored.
    """
    for session in request_sessions():
        new, changed, deleted = _unflushed(session)
        if new or changed or deleted:
            changes_logger.warning(
                "%d new, %d changed and %d deleted object(s) in the request's Session of %s %s were never "
                "flushed, and closing the Session at the request's end drops them: commit in the view, or in a "
                "teardown_request registered after init_app (teardowns run last registered first)",
                new,
                changed,
                deleted,
                request.method,
                request.path,
            )


def _unflushed(session: Session) -> tuple[int, int, int]:
    """How many objects ``session`` holds added, changed (a value that differs) and deleted, unflushed."""
    changed = sum(1 for obj in session.dirty if session.is_modified(obj)) if session.dirty else 0
    return len(session.new), changed, len(session.deleted)


def _closing_despite_outage(close: Callable[[], None]) -> bool:
    """Close a Session whose connection may have died after the response was made.

    The rollback that closing sends then fails with the connection already
    invalidated (the server rolled the transaction back itself), and the
    response must not turn into a 500 for it. Any other failure is raised.
    Whether ``close`` ran to its end.
    """
    try:
        close()
    except exc.DBAPIError as error:
        if not error.connection_invalidated:
            raise
        current_app.logger.warning("database connection lost while ending the request: %s", error.orig)
        return False
    return True
