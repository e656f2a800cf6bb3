"""Two tenants with users, projects and API tokens, for the demo and its tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rls_tenancy import Tenant, UnsafeBypass, as_tenant
from rls_tenancy.identity import User
from rls_tenancy.identity.token_key import TokenKey, token_keys
from rls_tenancy.identity.tokens import issue_token
from saas_demo.models import Plan, Project, Task

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class TenantSeed:
    name: str
    users: dict[str, tuple[list[str], str]]  # email: (roles, language)
    projects: dict[str, list[str]]  # name: task titles


TENANTS = {
    "acme": TenantSeed(
        name="Acme Corp",
        users={"alice@acme.example": (["admin", "projects:read", "projects:write"], "en")},
        projects={"Website relaunch": ["Pick fonts", "Write copy"], "Billing": ["Send invoices"]},
    ),
    "globex": TenantSeed(
        name="Globex",
        users={"hank@globex.example": (["projects:read", "projects:write"], "de")},
        projects={"Secret lab": ["Order lasers"], "Payroll": ["Pay Hank"]},
    ),
}


@dataclass
class Seeded:
    """What was made: tenant ids by slug, tokens by ``"<slug>/<name>"``, project ids by slug."""

    tenants: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    projects: dict[str, list[int]] = field(default_factory=dict)


def seed(app_engine: Engine, bypass: UnsafeBypass, token_key: TokenKey | None = None) -> Seeded:
    """The tenants, as the demo app configured the same way sees them.

    ``token_key`` marks the tokens; by default the first of ``$RLS_TENANCY_TOKEN_KEYS``, if any.
    """
    if token_key is None:
        configured = token_keys(None)
        token_key = configured[0] if configured else None
    seeded = Seeded()
    with bypass.session(reason="demo: create tenants and plans") as session:
        session.add_all([Plan(name="Free"), Plan(name="Pro")])
        for slug, spec in TENANTS.items():
            tenant = Tenant(slug=slug, name=spec.name)
            session.add(tenant)
            session.flush()
            seeded.tenants[slug] = tenant.id
    for slug, spec in TENANTS.items():
        # Everything inside one tenant is made as that tenant, under RLS.
        with as_tenant(seeded.tenants[slug]), Session(app_engine) as session, session.begin():
            users = []
            for email, (roles, language) in spec.users.items():
                user = User(email=email, roles=roles, language=language)
                user.set_password(PASSWORD)
                users.append(user)
            session.add_all(users)
            projects = [Project(name=name) for name in spec.projects]
            projects.append(Project(name="Old experiment", status="invisible"))
            session.add_all(projects)
            session.flush()
            for project in projects[:-1]:
                session.add_all(Task(project_id=project.id, title=title) for title in spec.projects[project.name])
            seeded.projects[slug] = [project.id for project in projects]
            full = issue_token(
                session, name="ci", scopes=["projects:read", "projects:write"], user_id=users[0].id, key=token_key
            )
            read_only = issue_token(session, name="dashboard", scopes=["projects:read"], key=token_key)
            seeded.tokens[f"{slug}/ci"] = full.token
            seeded.tokens[f"{slug}/dashboard"] = read_only.token
    return seeded
