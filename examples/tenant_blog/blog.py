"""flaskr's ``blog`` blueprint: the index, create, update, delete; every query as the request's tenant.

No view names the tenant: the extension binds it to every transaction and
the ORM adds it to every query, so flaskr's queries carry over unchanged.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from rls_tenancy.flask import get_current_user, require_scopes, state
from tenant_blog.auth import blog_tenant, form, required
from tenant_blog.models import Post

bp = Blueprint("blog", __name__)
ID = "int4(min=1)"  # posts.id is an integer: a larger id matches no route (404) and never reaches the database


def as_json(post: Post) -> dict[str, Any]:
    return {
        "id": post.id,
        "title": post.title,
        "body": post.body,
        "created": post.created.isoformat(),
        "author_id": post.author_id,
        "author": post.author.email,
    }


# tutorial: index
@bp.get("/")
def index() -> ResponseReturnValue:
    """Every post of this host's tenant, newest first, with its author: flaskr's JOIN, as the ORM says it."""
    blog_tenant()
    posts = state().session().scalars(select(Post).options(joinedload(Post.author)).order_by(Post.created.desc()))
    return jsonify(posts=[as_json(post) for post in posts])


# tutorial: end index


# tutorial: get-post
def get_post(post_id: int, check_author: bool = True) -> Post:
    """flaskr's ``get_post``: 404 when there is no such post, 403 when it is someone else's.

    Another tenant's post is not there at all: the same 404 as an id nobody has.
    """
    post = state().session().get(Post, post_id)
    if post is None:
        abort(404, f"Post id {post_id} doesn't exist.")
    user = get_current_user()
    if check_author and (user is None or post.author_id != user.id):
        abort(403, "Only its author may change a post.")
    return post


# tutorial: end get-post


# tutorial: create
@bp.post("/create")
@require_scopes()  # flaskr's @login_required: 401 without a login
def create() -> ResponseReturnValue:
    body = form()
    user = get_current_user()
    assert user is not None  # require_scopes() let only logged-in requests through
    post = Post(title=required(body, "title"), body=_body(body), author_id=user.id)  # tenant_id: the request's
    session = state().session()
    session.add(post)
    session.flush()  # the database gives the post its id and created time
    answer = as_json(post)  # read before the commit, which expires what the session loaded
    session.commit()
    return jsonify(answer), 201


# tutorial: end create


# tutorial: update-delete
@bp.route(f"/<{ID}:post_id>/update", methods=("GET", "POST"))
@require_scopes()
def update(post_id: int) -> ResponseReturnValue:
    """GET: the post, as flaskr's edit form shows it; POST: a new title and body."""
    post = get_post(post_id)
    if request.method == "POST":
        body = form()
        post.title, post.body = required(body, "title"), _body(body)
    answer = as_json(post)  # read before the commit, which expires what the session loaded
    state().session().commit()
    return jsonify(answer)


@bp.post(f"/<{ID}:post_id>/delete")
@require_scopes()
def delete(post_id: int) -> ResponseReturnValue:
    session = state().session()
    session.delete(get_post(post_id))
    session.commit()
    return jsonify(deleted=post_id)


# tutorial: end update-delete


def _body(body: dict[str, Any]) -> str:
    value = body.get("body", "")
    if not isinstance(value, str):
        abort(400, "Body must be text.")
    return value
