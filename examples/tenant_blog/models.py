"""The blog's table as a SQLAlchemy model: flaskr's ``schema.sql``, with each post in one tenant.

flaskr's ``user`` table is gone: the library's ``rls_tenancy.users`` (the
``User`` model) already holds users, isolated by tenant, with werkzeug
password hashes, and the Flask extension logs them in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Identity, Integer, PrimaryKeyConstraint, Text, and_, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from rls_tenancy import TenantBoundMixin, User
from rls_tenancy.orm.tenant_keys import tenant_foreign_key


class Base(DeclarativeBase):
    pass


# tutorial: post-model
class Post(TenantBoundMixin, Base):  # TenantBoundMixin adds tenant_id and the ORM filter
    """flaskr's ``post``: written by a user of the same tenant, seen by that tenant only."""

    __tablename__ = "posts"
    __table_args__ = (
        # The key leads with tenant_id: no index spans tenants, so none tells one tenant of another's ids.
        PrimaryKeyConstraint("tenant_id", "id", name="posts_pkey"),
        # (tenant_id, author_id) -> users (tenant_id, id): a post can only name an author of its own tenant.
        tenant_foreign_key("author_id", User, name="posts_author_fkey"),
    )

    # Generated always, and the migration lets no role but the owner write it: ids stay unique in fact.
    id: Mapped[int] = mapped_column(Integer, Identity(always=True))
    __mapper_args__ = {"primary_key": [id]}  # the ORM and the URLs still name a post by its id alone
    author_id: Mapped[int] = mapped_column(BigInteger)  # users.id is a bigint
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[User] = relationship(
        User,
        primaryjoin=lambda: and_(Post.author_id == User.id, Post.tenant_id == User.tenant_id),
        foreign_keys=lambda: [Post.tenant_id, Post.author_id],
        viewonly=True,  # the view sets author_id; the author is only read, for the index
    )


# tutorial: end post-model
