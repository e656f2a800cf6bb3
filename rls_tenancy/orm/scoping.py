"""ORM scoping: the second wall, in front of row level security.

Queries on :class:`~rls_tenancy.TenantBoundMixin` models get
``tenant_id = <tenant in context>`` through ``with_loader_criteria`` (2.0
``select()``, legacy ``Query``, relationship loads, aliases, unions, ORM bulk
UPDATE and DELETE), and the flush refuses objects of another tenant, as do
the statements about its relationships (lazy, dynamic, write-only,
``with_parent()``). Even if this layer were bypassed, PostgreSQL still
enforces the policy.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import BigInteger, Connection, Result, bindparam, event
from sqlalchemy.orm import (
    LoaderCriteriaOption,
    Mapper,
    ORMExecuteState,
    Session,
    UOWTransaction,
    attributes,
    object_session,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql import visitors
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import ExternallyTraversible

from rls_tenancy.context import current_tenant_id, require_tenant_id
from rls_tenancy.errors import NoTenantError, ObjectNotVisibleError, TenantMismatchError, UsageError
from rls_tenancy.orm.mixin import TenantBoundMixin
from rls_tenancy.orm.query import UNCONSTRAINED
from rls_tenancy.orm.unbound import refuse_unbound, refuse_unbound_begun
from rls_tenancy.tenant_tables import mentions_tenant_table

#: ``Session.info`` key marking a session of the unsafe bypass.
BYPASS_REASON = "rls_tenancy.bypass_reason"
_SCOPED = "rls_tenancy.scoped"
_BIND_CHECKED = "rls_tenancy.bind_checked"

if TYPE_CHECKING:  # greenlet, which SQLAlchemy's asyncio needs, is optional: imported only where it is used
    from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session, async_sessionmaker

    ScopeTarget = (
        type[Session]
        | sessionmaker[Any]
        | scoped_session[Any]
        | type[AsyncSession]
        | async_sessionmaker[Any]
        | async_scoped_session[Any]
    )

#: The Session classes scope_sessions() listened on. SQLAlchemy's own record
#: (``event.contains``) is keyed by ``id()``: a new sessionmaker's class at the
#: address of a collected one looked scoped already and was skipped (260 of
#: 300 fresh sessionmakers, measured). An entry here dies with its class.
_scoped: weakref.WeakSet[type[Session]] = weakref.WeakSet()


def scope_sessions(target: ScopeTarget = Session) -> None:
    """Scope every ORM statement and flush of sessions made by ``target``.

    ``target`` is a ``sessionmaker``, a ``scoped_session`` or a ``Session``
    subclass (the default, ``Session``, covers all sessions), or their
    asyncio counterparts: an ``AsyncSession`` runs its statements through
    its ``sync_session_class``, which is what gets scoped (``Session``
    unless one of its own was given). Idempotent.

    A Session working for a tenant (its first statement for one, or its
    beginning on a connection) on an engine that no
    :func:`~rls_tenancy.bind_engine` covers is refused when the engine's role is
    under row level security (:mod:`rls_tenancy.orm.unbound`): it would see no rows.
    """
    session_class = _session_class(target)
    # Both: _scoped says it is this very class, event.contains that nobody
    # removed the listeners since.
    if session_class not in _scoped or not event.contains(session_class, "do_orm_execute", _scope_statement):
        # insert=True: first among the Session's listeners, so that one of the app's (a result cache)
        # sees the statement with its tenant, and never answers it before the tenant is checked.
        event.listen(session_class, "do_orm_execute", _scope_statement, insert=True)
        event.listen(session_class, "before_flush", _check_flush)
        event.listen(session_class, "transient_to_pending", _remember_tenant)
        event.listen(session_class, "detached_to_persistent", _brought_in)
        event.listen(session_class, "after_begin", refuse_unbound_begun)
        _scoped.add(session_class)
    for row_event in ("before_insert", "before_update"):
        if not event.contains(TenantBoundMixin, row_event, _check_row):
            event.listen(TenantBoundMixin, row_event, _check_row, propagate=True)


#: Listeners :func:`listen_on_sessions` added, per Session class (dying with it; see ``_scoped``).
_listening: weakref.WeakKeyDictionary[type[Session], set[tuple[str, Callable[..., Any]]]] = weakref.WeakKeyDictionary()


def listen_on_sessions(target: ScopeTarget, identifier: str, listener: Callable[..., Any]) -> None:
    """Listen with ``listener`` to ``identifier`` of the Sessions ``target`` makes, once (idempotent)."""
    session_class = _session_class(target)
    added = _listening.setdefault(session_class, set())
    if (identifier, listener) not in added or not event.contains(session_class, identifier, listener):
        event.listen(session_class, identifier, listener)
        added.add((identifier, listener))


def _session_class(target: ScopeTarget) -> type[Session]:
    """The Session class whose events reach ``target``'s sessions."""
    # Whoever made an asyncio target imported SQLAlchemy's asyncio module: without it, there is none.
    asyncio = sys.modules.get("sqlalchemy.ext.asyncio")
    if isinstance(target, scoped_session) or (asyncio and isinstance(target, asyncio.async_scoped_session)):
        target = target.session_factory
    if isinstance(target, sessionmaker):
        return cast(type[Session], target.class_)
    if asyncio and isinstance(target, asyncio.async_sessionmaker):
        return cast(type[Session], target.kw.get("sync_session_class") or target.class_.sync_session_class)
    if asyncio and isinstance(target, type) and issubclass(target, asyncio.AsyncSession):
        return cast("type[AsyncSession]", target).sync_session_class
    if isinstance(target, type) and issubclass(target, Session):
        return target
    raise UsageError(
        f"scope_sessions() takes a sessionmaker, a scoped_session or a Session class, "
        f"or their asyncio counterparts; got {target!r}"
    )


def _scope_statement(state: ORMExecuteState) -> Result[Any] | None:
    if state.session.info.get(BYPASS_REASON) is not None:
        return None
    if not (state.is_select or state.is_update or state.is_delete):
        # An ORM insert without a tenant: NoTenantError, as add() and flush()
        # give, rather than the policy's refusal of a row of no tenant.
        if state.is_insert and current_tenant_id() is None and mentions_tenant_table(state.statement):
            require_tenant_id()
        return None
    tenant_id = current_tenant_id()
    if tenant_id is None:
        if mentions_tenant_table(state.statement):
            require_tenant_id()
        return None
    if not state.is_orm_statement or state.execution_options.get(UNCONSTRAINED):
        return None  # a Core statement (a Table, a function) gets no ORM criteria: only RLS applies
    info = state.session.info
    if _BIND_CHECKED not in info:  # once per Session: the engine its statements run on, however it got it
        refuse_unbound(state)
        info[_BIND_CHECKED] = True
    several = info.setdefault(_ACTED_FOR, tenant_id) != tenant_id
    if several:
        info[_ACTED_FOR] = _SEVERAL  # from now on, never equal to a tenant
    # Objects of a session that acted for one tenant only are that tenant's, unless it was given some.
    doubtful = several or _BROUGHT_IN in info
    if state.is_select and (doubtful or state.lazy_loaded_from is not None):
        _check_parents(state, tenant_id, doubtful)
    state.statement = state.statement.options(_CRITERIA)
    given = state.parameters
    if given is None or isinstance(given, Mapping):  # a list is bulk UPDATE by primary key: no criteria reach it
        state.parameters = {**(given or {}), TENANT_PARAMETER: tenant_id}
    if doubtful and state.is_column_load:
        return _refreshed(state, tenant_id)
    return None


def _check_parents(state: ORMExecuteState, tenant_id: int, doubtful: bool) -> None:
    """Refuse a statement about the relationships of another tenant's object.

    The criteria and RLS would answer "none": a lazy load keeps that as the
    relationship's value, a dynamic or write-only relationship (or
    ``with_parent()``, ``Task.project == project``) returns it. Only a
    ``doubtful`` session pays for walking the statement's criteria, or for
    loading a ``tenant_id`` the object lacks.
    """
    parent = state.lazy_loaded_from
    if parent is not None:
        _check_parent(parent, tenant_id, doubtful)
    if doubtful:
        for criteria_parent in _criteria_parents(state.statement):
            _check_parent(criteria_parent, tenant_id, doubtful)


def _check_parent(parent: InstanceState[Any], tenant_id: int, doubtful: bool) -> None:
    if not issubclass(parent.class_, TenantBoundMixin):
        return
    owner = parent.dict.get("tenant_id")
    if owner is None and doubtful:
        owner = _owner_of(parent, tenant_id)
    if owner is not None and owner != tenant_id:
        raise TenantMismatchError(
            f"{parent.class_.__name__} {parent.identity} belongs to tenant {owner}: its relationships cannot be "
            f"loaded or queried acting for tenant {tenant_id}; load it again acting for its tenant, or use a "
            "Session per tenant"
        )


def _owner_of(parent: InstanceState[Any], tenant_id: int) -> int | None:
    """The tenant of an object whose ``tenant_id`` is not loaded (``load_only``, deferred, expired).

    Loaded from the database, through the refresh check: a row the tenant in
    context cannot see raises :class:`ObjectNotVisibleError`. A new object
    has no row, hence nothing to compare; a detached one cannot be asked.
    """
    obj = parent.obj()
    if obj is None or parent.key is None:
        return None  # collected, or new: no row whose children could be another tenant's
    if parent.detached:
        raise TenantMismatchError(
            f"{parent.class_.__name__} {parent.identity} is detached and its tenant_id is not loaded: "
            f"whether it belongs to tenant {tenant_id} is unknown; load it again acting for its tenant"
        )
    return cast(TenantBoundMixin, obj).tenant_id


def _criteria_parents(statement: Executable) -> Iterator[InstanceState[Any]]:
    """The objects a statement's criteria compare to: ``with_parent()``, dynamic and write-only relationships.

    SQLAlchemy renders such criteria with parameters whose value a callable
    reads from the object when the statement is compiled; the object is in
    that callable's closure.
    """
    seen: set[int] = set()
    for element in visitors.iterate(cast(ExternallyTraversible, statement)):
        read = element.callable if isinstance(element, BindParameter) else None
        for cell in getattr(read, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # a cell not yet filled
                continue
            if isinstance(value, InstanceState) and id(value) not in seen:
                seen.add(id(value))
                yield value


#: ``Session.info``: the tenant the session's ORM statements acted for, or
#: :data:`_SEVERAL` once they acted for more than one.
_ACTED_FOR = "rls_tenancy.acted_for"
_SEVERAL = object()
#: ``Session.info``: the session was given an object loaded elsewhere (``add()`` of a detached object,
#: ``merge(load=False)``), which may be another tenant's though the session acted for one only.
_BROUGHT_IN = "rls_tenancy.brought_in"


def _brought_in(session: Session, _state: InstanceState[Any]) -> None:
    session.info[_BROUGHT_IN] = True


def _refreshed(state: ORMExecuteState, tenant_id: int) -> Result[Any]:
    """A refresh in a doubtful session (several tenants, objects brought in): a typed error for a row not visible.

    The object may have been loaded for another tenant (and expired by a
    commit): SQLAlchemy would report it deleted, though it exists. The error
    is also an ``ObjectDeletedError``: the row may as well have been deleted. Only such
    sessions pay for looking at the result first; it costs no round trip.
    """
    frozen = state.invoke_statement().freeze()
    if not frozen.data:
        refreshing = state.load_options._refresh_state
        what = "the object" if refreshing is None else f"{refreshing.class_.__name__} {refreshing.identity}"
        raise ObjectNotVisibleError(
            refreshing,
            f"{what} is not visible to tenant {tenant_id}: it was loaded for another tenant (this session acted "
            "for several, or was given objects loaded elsewhere), or deleted since; load it again acting for its "
            "tenant, or use a Session per tenant",
        )
    return frozen()


#: The criteria's value, passed with each statement's parameters. The name
#: is the library's; a statement's own parameter of that name is overwritten.
TENANT_PARAMETER = "rls_tenancy_tenant_id"
_TENANT = bindparam(TENANT_PARAMETER, type_=BigInteger())


class _TenantCriteria(LoaderCriteriaOption):
    """``with_loader_criteria`` whose cache key names the tenant's parameter among the statement's parameters.

    Inside the lambda, the parameter is part of the key's structure only,
    so a result cache keyed as SQLAlchemy's dogpile example keys it (the
    SQL and the values of the key's parameters) would key a statement with
    parameters of its own (``WHERE status = :status``) without its tenant,
    and answer every tenant from the first one's rows. Listed, its value
    (the execution's parameter) is part of such a key.
    """

    _traverse_internals = LoaderCriteriaOption._traverse_internals

    def _gen_cache_key(self, anon_map: Any, bindparams: list[BindParameter[Any]]) -> Any:
        key = super()._gen_cache_key(anon_map, bindparams)
        bindparams.append(_TENANT)
        return key


#: One criteria option for every tenant: the tenant is a parameter of the
#: statement, not a value captured in the option. A statement carrying it
#: then has the same cache key whatever the tenant, and SQLAlchemy has no
#: captured values to match up on each execution; capturing the tenant in
#: the lambda instead cost about 65 µs of CPU per statement (measured in
#: benchmarks/, "CPU per request"). A statement that carries the option but
#: was not given the parameter fails rather than running unscoped.
_CRITERIA: LoaderCriteriaOption = _TenantCriteria(
    TenantBoundMixin, lambda cls: cls.tenant_id == _TENANT, include_aliases=True
)


#: The tenant in context when a new object was added to a Session: its flush must act for the same one.
_ADDED_FOR = "rls_tenancy.added_for"


def _remember_tenant(session: Session, obj: object) -> None:
    """Note the tenant a new object was added for, so a flush under another tenant refuses it.

    Its ``tenant_id`` is filled from the context at flush, which may come
    after the block ended: a loop adding each tenant's rows in that tenant's
    block and committing once would otherwise write them all to the last.
    """
    if isinstance(obj, TenantBoundMixin) and session.info.get(BYPASS_REASON) is None:
        tenant_id = current_tenant_id()
        if tenant_id is not None:
            attributes.instance_state(obj).info[_ADDED_FOR] = tenant_id


def _check_flush(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    session.info[_SCOPED] = True  # tells the row-level checks below this session is scoped
    bypass = session.info.get(BYPASS_REASON) is not None
    for obj in session.new:
        if isinstance(obj, TenantBoundMixin):
            _check_new(obj, bypass)
    if bypass:
        return
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, TenantBoundMixin):
            _check_existing(obj)


def _check_new(obj: TenantBoundMixin, bypass: bool) -> None:
    state = attributes.instance_dict(obj)
    given: int | None = state.get("tenant_id")
    related = state.get("tenant")  # the read-only relationship, if someone assigned it
    if related is not None:
        if related.id is None or (given is not None and related.id != given):
            raise TenantMismatchError(
                f"new {type(obj).__name__} was given tenant={related!r} and tenant_id={given}; "
                "the tenant relationship is read-only: set tenant_id (or nothing, to use the context)"
            )
        given = related.id
    if bypass:
        # Without tenant_id, a relationship may still supply it during the
        # flush; the insert check below says so if none does.
        if given is not None:
            obj.tenant_id = given
        return
    expected = require_tenant_id()
    added_for = attributes.instance_state(obj).info.get(_ADDED_FOR, expected)
    if given is None and added_for != expected:
        raise TenantMismatchError(
            f"new {type(obj).__name__} was added to the session acting for tenant {added_for} but is "
            f"flushed acting for tenant {expected}; flush or commit inside the tenant's block"
        )
    if given is None:
        obj.tenant_id = expected
    elif given != expected:
        raise TenantMismatchError(
            f"new {type(obj).__name__} has tenant_id={given} but the tenant in "
            f"context is {expected}; leave tenant_id unset to use the context"
        )


def _check_existing(obj: TenantBoundMixin) -> None:
    history = attributes.get_history(obj, "tenant_id")
    if history.has_changes() and history.deleted:
        raise TenantMismatchError(
            f"{type(obj).__name__}.tenant_id cannot change "
            f"(from {history.deleted[0]} to {history.added[0] if history.added else None}); "
            "rows never move between tenants"
        )
    expected = require_tenant_id()
    if obj.tenant_id != expected:
        raise TenantMismatchError(
            f"{type(obj).__name__} of tenant {obj.tenant_id} cannot be changed "
            f"or deleted while acting for tenant {expected}"
        )


def _check_row(_mapper: Mapper[Any], _connection: Connection, obj: TenantBoundMixin) -> None:
    """The last look, after the flush copied foreign keys from related objects."""
    session = object_session(obj)
    if session is None or not session.info.get(_SCOPED):
        return
    if obj.tenant_id is None and session.info.get(BYPASS_REASON) is None:
        # Added during the flush, after its check ran (a before_flush listener of the app's
        # registered after the library's): checked now, as it would have been then.
        _check_new(obj, bypass=False)
    if obj.tenant_id is None:
        raise NoTenantError(
            f"{type(obj).__name__} has no tenant_id: set it, or a relationship that carries it "
            "(through the unsafe bypass there is no tenant in context to fall back on)"
        )
    if session.info.get(BYPASS_REASON) is None and obj.tenant_id != require_tenant_id():
        raise TenantMismatchError(
            f"{type(obj).__name__} would be written to tenant {obj.tenant_id} (taken from a related "
            f"object) while acting for tenant {require_tenant_id()}"
        )
