"""Flask's tutorial blog (flaskr), converted to a multi-tenant app on rls_tenancy; docs/tutorial.md walks through it."""

from __future__ import annotations

from tenant_blog.app import create_app

__all__ = ["create_app"]
