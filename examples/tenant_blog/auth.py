"""flaskr's ``auth`` blueprint: register, log in, log out, with the library's users and login helpers.

flaskr's ``load_logged_in_user`` and ``g.user`` are gone: the extension finds
the user from the signed cookie before each view (``get_current_user()``),
and ``@require_scopes()`` replaces ``@login_required``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from rls_tenancy import Tenant, User
from rls_tenancy.flask import authenticate_user, get_current_tenant, login, logout, state

bp = Blueprint("auth", __name__, url_prefix="/auth")


# tutorial: blog-tenant
def blog_tenant() -> Tenant:
    """The tenant whose blog this host is; a 404 on a host that names none (plain ``localhost``)."""
    tenant = get_current_tenant()
    if tenant is None:
        abort(404, "no blog here: open a tenant's blog at <tenant>.localhost")
    return tenant


# tutorial: end blog-tenant


def form() -> dict[str, Any]:
    """The request's JSON object: flaskr's ``request.form``.

    JSON only: a form on another site cannot send ``application/json``
    without the browser asking first, which keeps cross-site requests out.
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "send a JSON object (Content-Type: application/json)")
    return body


def required(body: dict[str, Any], name: str) -> str:
    """``body[name]`` when it is non-blank text, else flaskr's "... is required." as a 400."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        abort(400, f"{name.capitalize()} is required.")
    return value


# tutorial: register
@bp.post("/register")
def register() -> ResponseReturnValue:
    """A new user of this host's tenant. A taken email: the extension answers 409 (the unique key)."""
    blog_tenant()
    body = form()
    user = User(email=required(body, "email"))  # a malformed email: UsageError, which the extension answers 400
    user.set_password(required(body, "password"))  # werkzeug's hash, as flaskr's
    session = state().session()
    session.add(user)  # tenant_id: the request's tenant, from the host
    session.flush()
    answer = {"id": user.id, "email": user.email}  # read before the commit, which expires the user
    session.commit()
    return jsonify(answer), 201


# tutorial: end register


# tutorial: login
@bp.post("/login")
def log_in() -> ResponseReturnValue:
    """flaskr's login, in this host's tenant; one answer whichever of email or password was wrong."""
    tenant = blog_tenant()
    body = form()
    user = authenticate_user(tenant.slug, required(body, "email"), required(body, "password"))
    if user is None:
        return jsonify(error="invalid_credentials", message="Incorrect email or password."), 401
    login(user)  # the user and tenant go in the signed session cookie
    return jsonify(id=user.id, email=user.email)


@bp.post("/logout")
def log_out() -> ResponseReturnValue:
    logout()
    return jsonify(ok=True)


# tutorial: end login
