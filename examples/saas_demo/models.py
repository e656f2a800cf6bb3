"""The demo's tables: projects and the tasks inside them (per tenant), plans (shared)."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Identity, Integer, PrimaryKeyConstraint, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from rls_tenancy import TenantBoundMixin
from rls_tenancy.orm.tenant_keys import tenant_foreign_key


class Base(DeclarativeBase):
    pass


class Plan(Base):
    """Reference data every tenant reads and none can change (``op.share_table``)."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


#: The seed's project states; invisible projects are never touched by batch updates.
STATUSES = ("active", "archived", "invisible")


class Project(TenantBoundMixin, Base):
    """The seed's ``Project``: ``Project.query.all()`` shows only the tenant's own."""

    __tablename__ = "projects"
    # The key leads with tenant_id: no index says to one tenant whether another holds an id (a duplicate key
    # error, EXPLAIN ANALYZE over an id range), and (tenant_id, id) is what a tenant foreign key points at.
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id", name="projects_pkey"),
        CheckConstraint("status IN ('active', 'archived', 'invisible')", name="projects_status_check"),
    )

    # Generated always, and no role but the owner may write an id (saas_0004): ids stay unique across
    # tenants in fact, without an index that says so to every tenant.
    id: Mapped[int] = mapped_column(Integer, Identity(always=True))
    # The ORM still identifies a project by its id alone: session.get(Project, id), the API's /projects/<id>.
    __mapper_args__ = {"primary_key": [id]}
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    tasks: Mapped[list[Task]] = relationship(back_populates="project", order_by="Task.id")

    def __repr__(self) -> str:
        return f"<Project {self.name!r} tenant={self.tenant_id}>"


class Task(TenantBoundMixin, Base):
    __tablename__ = "tasks"
    # Composite key: a task can only point at a project of its own tenant,
    # even though foreign-key checks ignore row level security.
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id", name="tasks_pkey"),
        tenant_foreign_key("project_id", "projects", name="tasks_project_fkey"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(always=True))
    __mapper_args__ = {"primary_key": [id]}
    project_id: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(100))
    project: Mapped[Project] = relationship(
        back_populates="tasks",
        primaryjoin="and_(Task.project_id == Project.id, Task.tenant_id == Project.tenant_id)",
        foreign_keys="[Task.tenant_id, Task.project_id]",
    )

    def __repr__(self) -> str:
        return f"<Task {self.title!r} tenant={self.tenant_id}>"
