"""The library's own mapped table: ``rls_tenancy.tenants``.

Its DDL belongs to the migrations (``sql/003_tenants.sql``); this mapping only
reads and writes rows. The application role can read just the tenant bound to
its transaction; creating tenants is an admin path (see :mod:`rls_tenancy.bypass`).
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import BigInteger, Connection, DateTime, Identity, MetaData, Text, func, literal, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, validates

from rls_tenancy.errors import UsageError

#: A DNS label, so a slug can also name a subdomain; same rule as the SQL CHECK.
SLUG_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


def storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: valid UTF-8 (no lone surrogates), no NUL."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class TenancyBase(DeclarativeBase):
    """Declarative base of the library's tables; not for ``create_all``."""

    metadata = MetaData(schema="rls_tenancy")


class Tenant(TenancyBase):
    """One customer of the application; every tenant-bound row points at one."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    slug: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    @validates("slug")
    def _check_slug(self, _key: str, slug: str) -> str:
        if not isinstance(slug, str) or not SLUG_PATTERN.match(slug):
            raise UsageError(
                f"tenant slug {slug!r} must be 1-63 lower-case letters, digits or "
                "hyphens, not starting or ending with a hyphen"
            )
        return slug

    @validates("name")
    def _check_name(self, _key: str, name: str) -> str:
        if not isinstance(name, str) or not 1 <= len(name) <= 200 or not storable(name):
            raise UsageError("tenant name must be text of 1 to 200 characters")
        return name

    def __repr__(self) -> str:
        return f"<Tenant id={self.id!r} slug={self.slug!r}>"


def tenant_id_for_slug(executor: Session | Connection, slug: str) -> int | None:
    """The id of the tenant with ``slug``, before any tenant is bound; None when there is none.

    ``rls_tenancy.tenant_id_for_slug()`` (``SECURITY DEFINER``) finds one
    tenant by its slug and shows the application role nothing else of the
    tenants table.
    """
    found = executor.execute(select(func.rls_tenancy.tenant_id_for_slug(literal(slug, Text)))).scalar()
    return None if found is None else int(found)
