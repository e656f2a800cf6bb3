"""Streaming a response body as the request's tenant and user.

A streamed body runs after the view has returned and after the request's
teardown, in the server's context: it sees no tenant, so a query in it fails
with :class:`~rls_tenancy.errors.NoTenantError` after the ``200`` and the
first chunks have gone out, and the client gets a truncated body. Flask's
``stream_with_context`` keeps the request and app context for the body, not
the tenant. :func:`stream_with_tenant` adds the tenant and user the request
acts for, checked while the view runs (so a request without a tenant gets its
401 instead of a cut-off ``200``). A Session the body opens (``db.session``,
``tenancy.session``) is closed when the stream ends or the client goes away:
Flask runs the request's teardown again then.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import AnyStr

from flask import stream_with_context

from rls_tenancy.context import as_tenant_for_call, current_user_id, require_tenant_id

__all__ = ["stream_with_tenant"]


def stream_with_tenant(body: Iterable[AnyStr]) -> Iterator[AnyStr]:
    """``body`` streamed with the request's context and as the request's tenant and user.

    Call it in the view: ``return Response(stream_with_tenant(rows()), mimetype="text/csv")``.
    Raises :class:`~rls_tenancy.errors.NoTenantError` there when the request
    has no tenant.
    """
    tenant = require_tenant_id()
    user = current_user_id()

    def acting() -> Iterator[AnyStr]:
        with as_tenant_for_call(tenant, user=user):
            yield from body

    return stream_with_context(acting())
