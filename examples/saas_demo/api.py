"""The demo's JSON API: projects per tenant, the seed's batch update made safe."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from rls_tenancy.audit import ACTION_PATTERN, MAX_PAGE, read_events
from rls_tenancy.errors import UnknownFeatureError
from rls_tenancy.features import EVERY_SCOPE, Feature
from rls_tenancy.features.overrides import list_overrides
from rls_tenancy.flask import (
    authenticate_user,
    get_current_language,
    get_current_scopes,
    get_current_tenant,
    get_current_user,
    log,
    login,
    logout,
    require_scopes,
    state,
)
from rls_tenancy.flask.features import clear_feature_override, request_flags, set_feature_override
from rls_tenancy.orm.models import storable
from saas_demo.models import STATUSES, Plan, Project

api = Blueprint("api", __name__, url_prefix="/api")

GREETINGS = {"en": "Hello", "de": "Hallo", "fr": "Bonjour"}
MAX_BATCH = 1000
ID = "int4(min=1)"  # the column is a 32-bit integer: a larger id matches no route (404)


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "send a JSON object (Content-Type: application/json)")
    return body


def _name(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 100 or not storable(value):
        abort(400, "name must be text of 1 to 100 characters")
    return value.strip()


def _status(value: object) -> str:
    if value not in STATUSES:
        abort(400, f"status must be one of {', '.join(STATUSES)}")
    return str(value)


def _changes(body: dict[str, Any]) -> dict[str, str]:
    changes = {}
    if "name" in body:
        changes["name"] = _name(body["name"])
    if "status" in body:
        changes["status"] = _status(body["status"])
    if not changes or set(body) - {"name", "status"}:
        abort(400, "give name and/or status, nothing else")
    return changes


def _project(project: Project) -> dict[str, Any]:
    return {"id": project.id, "name": project.name, "status": project.status}


@api.get("/me")
def me() -> ResponseReturnValue:
    tenant, user, language = get_current_tenant(), get_current_user(), get_current_language()
    return jsonify(
        tenant=None if tenant is None else {"id": tenant.id, "slug": tenant.slug, "name": tenant.name},
        user=None if user is None else {"id": user.id, "email": user.email, "roles": user.roles},
        scopes=sorted(get_current_scopes()),
        language=language,
        greeting=GREETINGS[language],
    )


@api.get("/plans")
def plans() -> ResponseReturnValue:
    """Shared by every tenant, readable even without credentials."""
    rows = state().session().scalars(select(Plan).order_by(Plan.id))
    return jsonify(plans=[plan.name for plan in rows])


@api.get("/projects")
@require_scopes("projects:read")
def list_projects() -> ResponseReturnValue:
    status = request.args.get("status")
    query = select(Project).order_by(Project.id)
    query = query.where(Project.status == _status(status)) if status else query.where(Project.status != "invisible")
    return jsonify(projects=[_project(p) for p in state().session().scalars(query)])


@api.post("/projects")
@require_scopes("projects:write")
def create_project() -> ResponseReturnValue:
    body = _body()
    if set(body) - {"name", "status"}:
        abort(400, "give name and optionally status, nothing else")
    project = Project(name=_name(body.get("name")), status=_status(body.get("status", "active")))
    session = state().session()
    session.add(project)
    session.flush()
    log("project.created", f"project {project.id} created", project_id=project.id, name=project.name)
    # Read before the commit: it expires the instance, and reading it after
    # would begin a second transaction (and bind it) to load it again.
    created = _project(project)
    session.commit()
    return jsonify(created), 201


@api.get(f"/projects/<{ID}:project_id>")
@require_scopes("projects:read")
def get_project(project_id: int) -> ResponseReturnValue:
    # Another tenant's project is simply not there: the same 404 as a missing one.
    project = state().session().get(Project, project_id)
    if project is None:
        abort(404, "no such project")
    return jsonify(_project(project))


@api.patch(f"/projects/<{ID}:project_id>")
@require_scopes("projects:write")
def update_project(project_id: int) -> ResponseReturnValue:
    changes = _changes(_body())
    session = state().session()
    project = session.get(Project, project_id)
    if project is None:
        abort(404, "no such project")
    for key, value in changes.items():
        setattr(project, key, value)
    log("project.updated", f"project {project.id} updated", project_id=project.id, changes=changes)
    updated = _project(project)  # before the commit, as in create_project
    session.commit()
    return jsonify(updated)


@api.post("/projects/batch-update")
@require_scopes("projects:write")
def batch_update_projects() -> ResponseReturnValue:
    """The seed's "DANGER!" example, now safe: it can only ever touch the caller's rows.

    The slide wrote ``Project.id.in_(ids) & Project.status != INVISIBLE``,
    which Python reads as ``(... & ...) != INVISIBLE``; the condition is
    parenthesised here. Ids of other tenants' projects, like ids that do not
    exist and invisible projects, come back in ``not_found``.
    """
    body = _body()
    ids = body.get("ids")
    if (
        not isinstance(ids, list)
        or not 1 <= len(ids) <= MAX_BATCH
        or not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= 2147483647 for i in ids)
    ):
        abort(400, f"ids must be a list of 1 to {MAX_BATCH} project ids")
    changes = _changes({k: v for k, v in body.items() if k != "ids"})
    session = state().session()
    projects = session.scalars(select(Project).where(Project.id.in_(ids) & (Project.status != "invisible"))).all()
    for project in projects:
        for key, value in changes.items():
            setattr(project, key, value)
    updated = sorted(p.id for p in projects)
    log("project.batch_updated", f"{len(updated)} project(s) updated", project_ids=updated, changes=changes)
    session.commit()
    return jsonify(updated=updated, not_found=sorted(set(ids) - set(updated)))


@api.get("/audit")
@require_scopes("admin")
def audit_events() -> ResponseReturnValue:
    """The tenant's audit events, newest first: ``?action=&since=&until=&before=&limit=``.

    ``since`` and ``until`` are ISO 8601 times with a UTC offset; ``before``
    is the ``next`` value of the previous page.
    """
    args = request.args
    action = args.get("action")
    if action is not None and not ACTION_PATTERN.match(action):
        abort(400, "action must be an audit action name such as auth.login")
    limit = _int_arg("limit", 50, MAX_PAGE) or 50
    before = _int_arg("before", None, 2**63 - 1)
    events = read_events(
        state().session(),
        action=action,
        since=_time_arg("since"),
        until=_time_arg("until"),
        before_id=before,
        limit=limit,
    )
    next_page = events[-1].id if len(events) == limit else None
    return jsonify(events=[event.as_dict() for event in events], next=next_page)


def _int_arg(name: str, default: int | None, most: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    # Longer than the bound's digits is out of range, and int() refuses more than 4300 digits anyway.
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(most)) or not 1 <= int(raw) <= most:
        abort(400, f"{name} must be a whole number from 1 to {most}")
    return int(raw)


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        abort(400, f"{name} must be an ISO 8601 time with a UTC offset, e.g. 2026-01-31T12:00:00+00:00")
    return parsed


@api.get("/features")
def features() -> ResponseReturnValue:
    """Every feature flag, with its value for this request and why."""
    tenancy = state()
    flags = [
        {
            "key": found.key,
            "enabled": found.enabled,
            "reason": found.reason,
            "scope": found.scope,
            "allow_overrides": tenancy.features.get(found.key).allow_overrides,
        }
        for found in request_flags().all()
    ]
    overrides = list_overrides(tenancy.session()) if get_current_tenant() is not None else []
    return jsonify(
        features=flags,
        overrides=[
            {"feature": o.feature, "scope": o.scope, "enabled": o.enabled, "global": o.tenant_id is None}
            for o in overrides
        ],
    )


@api.put("/features/<key>")
@require_scopes()
def set_feature(key: str) -> ResponseReturnValue:
    """Store an override: ``{"enabled": true, "scope": "user:7"}`` (scope: this request's, by default)."""
    feature = _feature(key)
    body = _body()
    enabled, scope = body.get("enabled"), body.get("scope")
    if (
        not isinstance(enabled, bool)
        or (scope is not None and not isinstance(scope, str))
        or set(body) - {"enabled", "scope"}
    ):
        abort(400, 'give {"enabled": true or false} and optionally "scope" (text, or "*" for every scope)')
    stored = set_feature_override(feature, enabled, scope=_scope(scope))
    state().session().commit()
    return jsonify(feature=stored.feature, scope=stored.scope, enabled=stored.enabled)


@api.delete("/features/<key>")
@require_scopes()
def clear_feature(key: str) -> ResponseReturnValue:
    """Remove an override (``?scope=``; this request's scope by default)."""
    feature = _feature(key)
    removed = clear_feature_override(feature, scope=_scope(request.args.get("scope")))
    state().session().commit()
    if not removed:
        abort(404, "no such override")
    return jsonify(removed=True)


def _feature(key: str) -> Feature:
    try:
        return state().features.get(key)
    except UnknownFeatureError:
        abort(404, "no such feature")


def _scope(scope: str | None) -> str | None:
    if scope is not None and scope != EVERY_SCOPE and not (1 <= len(scope) <= 200 and storable(scope)):
        abort(400, "scope must be text of 1 to 200 characters, or *")
    return scope


@api.post("/login")
def log_in() -> ResponseReturnValue:
    body = _body()
    user = authenticate_user(str(body.get("tenant", "")), str(body.get("email", "")), str(body.get("password", "")))
    if user is None:
        return jsonify(error="invalid_credentials", message="wrong tenant, email or password"), 401
    login(user)
    return jsonify(user={"id": user.id, "email": user.email})


@api.post("/logout")
def log_out() -> ResponseReturnValue:
    logout()
    return jsonify(ok=True)
