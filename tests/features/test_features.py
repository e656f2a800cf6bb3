"""Feature flags: the stable rollout hash, declaration rules, evaluation order, overrides in PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from rls_tenancy import UnsafeBypass, as_tenant
from rls_tenancy.audit.events import event_origin
from rls_tenancy.errors import NoTenantError, OverrideNotAllowedError, UnknownFeatureError, UsageError
from rls_tenancy.features.declare import EVERY_SCOPE, Feature, FeatureRegistry, rollout_position
from rls_tenancy.features.flags import Flags, current_flags, flags_for
from rls_tenancy.features.overrides import (
    clear_global_override,
    clear_override,
    list_overrides,
    may_override,
    set_global_override,
    set_override,
)
from rls_tenancy.identity.users import User
from tests.conftest import World

# (key, scope, first 8 bytes of SHA-256(key 0x00 scope)): if these change, every rollout reshuffles.
VECTORS = [
    ("new-sign-in-flow", "ip:127.0.0.1", "9cd79aa2db534db8"),
    ("new-dashboard", "user:42", "3ca1284b191c9e2c"),
    ("beta-reports", "tenant:7", "e54fc49d378f0445"),
    ("beta-reports", "user:\u00fc", "8175984eb10fabd2"),  # the scope's UTF-8 bytes, not its code points
]


@pytest.mark.parametrize(("key", "scope", "prefix"), VECTORS)
def test_rollout_position_is_pinned(key: str, scope: str, prefix: str) -> None:
    assert rollout_position(key, scope) == int(prefix, 16) / 2**64


@pytest.mark.parametrize("chance", [0.01, 0.1, 0.25, 0.5, 0.9, 0.99])
def test_rollout_share_matches_the_chance(chance: float) -> None:
    feature = Feature("rollout", scope="user", enable_chance=chance, registry=FeatureRegistry())
    enabled = sum(bool(feature.rolled_out_to(f"user:{n}")) for n in range(10_000))
    # Four standard deviations of a binomial share over 10,000 scopes: at most 0.02.
    bound = 4 * (chance * (1 - chance) / 10_000) ** 0.5
    assert abs(enabled / 10_000 - chance) <= bound


def test_the_chance_is_the_share_enabled_not_its_complement() -> None:
    # The seed compared with `>`, which turned 0.9 into 10 %.
    feature = Feature("mostly-on", scope="user", enable_chance=0.9, registry=FeatureRegistry())
    assert sum(bool(feature.rolled_out_to(f"user:{n}")) for n in range(1000)) > 850


def test_features_with_the_same_chance_enable_different_scopes() -> None:
    registry = FeatureRegistry()
    first = Feature("first", scope="user", enable_chance=0.1, registry=registry)
    second = Feature("second", scope="user", enable_chance=0.1, registry=registry)
    scopes = [f"user:{n}" for n in range(10_000)]
    on_first = {s for s in scopes if first.rolled_out_to(s)}
    on_second = {s for s in scopes if second.rolled_out_to(s)}
    # Independent: about 1 % of scopes in both, not 10 %.
    assert len(on_first & on_second) < 200


def test_raising_the_chance_only_adds_scopes() -> None:
    scopes = [f"ip:10.0.{n // 256}.{n % 256}" for n in range(5000)]
    low = {s for s in scopes if rollout_position("growing", s) < 0.2}
    high = {s for s in scopes if rollout_position("growing", s) < 0.6}
    assert low < high


def test_registry_refuses_duplicates_and_reports_unknown_keys() -> None:
    registry = FeatureRegistry()
    declared = Feature("only-once", scope="tenant", registry=registry)
    with pytest.raises(UsageError, match="declared twice"):
        Feature("only-once", scope="user", registry=registry)
    assert registry.get("only-once") is declared
    assert "only-once" in registry and len(registry) == 1
    with pytest.raises(UnknownFeatureError, match="no feature 'missing'"):
        registry.get("missing")
    elsewhere = Feature("only-once", scope="tenant", registry=FeatureRegistry())
    with pytest.raises(UnknownFeatureError):
        registry.get(elsewhere)  # same key, another registry's feature


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"key": "Bad Key", "scope": "user"}, "invalid feature key"),
        ({"key": "", "scope": "user"}, "invalid feature key"),
        ({"key": "x" * 65, "scope": "user"}, "invalid feature key"),
        ({"key": "ok", "scope": "planet"}, "unknown scope"),
        ({"key": "ok", "scope": 42}, "scope is"),
        ({"key": "ok", "scope": "user", "enable_chance": 1.5}, "from 0 to 1"),
        ({"key": "ok", "scope": "user", "enable_chance": -0.1}, "from 0 to 1"),
        ({"key": "ok", "scope": "user", "enable_chance": True}, "a number"),
        ({"key": "ok", "scope": "user", "enable_chance": "0.5"}, "a number"),
        ({"key": "ok", "scope": "user", "allow_overrides": "everyone"}, "allow_overrides"),
        ({"key": "ok", "scope": "ip", "allow_overrides": "user"}, "scope='user'"),
        ({"key": "ok", "scope": "user", "default": "yes"}, "default"),
    ],
)
def test_bad_declarations_are_refused_and_not_registered(arguments: dict[str, object], message: str) -> None:
    registry = FeatureRegistry()
    with pytest.raises(UsageError, match=message):
        Feature(**arguments, registry=registry)  # type: ignore[arg-type]
    assert len(registry) == 0


def test_custom_scope_functions_and_their_mistakes() -> None:
    registry = FeatureRegistry()
    by_plan = Feature("by-plan", scope=lambda feature: "plan:pro", enable_chance=0.5, registry=registry)
    assert by_plan.scope_value() == "plan:pro"
    broken = Feature("broken-scope", scope=lambda feature: 42, registry=registry)  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="returned 42"):
        broken.scope_value()


def test_builtin_scopes_read_the_context(world: World) -> None:
    registry = FeatureRegistry()
    ip, user, tenant = (Feature(name, scope=name, registry=registry) for name in ("ip", "user", "tenant"))
    assert (ip.scope_value(), user.scope_value(), tenant.scope_value()) == (None, None, None)
    with as_tenant(world.a, user=7), event_origin(ip="2001:db8::1"):
        assert ip.scope_value() == "ip:2001:db8::1"
        assert user.scope_value() == "user:7"
        assert tenant.scope_value() == f"tenant:{world.a}"


def test_defaults_may_be_functions_and_must_give_booleans() -> None:
    registry = FeatureRegistry()
    calls: list[int] = []

    def newer_tenants() -> bool:
        calls.append(1)
        return True

    assert Feature("callable-default", scope="user", default=newer_tenants, registry=registry).default_value()
    assert calls == [1]
    wrong = Feature("wrong-default", scope="user", default=lambda: "yes", registry=registry)  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="not True or False"):
        wrong.default_value()


# Overrides in PostgreSQL, as the application role.


@dataclass(frozen=True)
class Users:
    """One user in each of the world's two tenants."""

    a: int
    b: int


@pytest.fixture()
def users(world: World, app_engine: Engine) -> Users:
    ids = []
    for tenant in (world.a, world.b):
        with as_tenant(tenant), Session(app_engine) as session, session.begin():
            user = User(email=f"flags-{secrets.token_hex(4)}@example.com")
            session.add(user)
            session.flush()
            ids.append(user.id)
    return Users(*ids)


@pytest.fixture()
def registry() -> FeatureRegistry:
    return FeatureRegistry()


@pytest.fixture()
def session(app_engine: Engine) -> Iterator[Session]:
    with Session(app_engine) as session:
        yield session


def test_evaluation_order(
    world: World, users: Users, registry: FeatureRegistry, session: Session, bypass: UnsafeBypass
) -> None:
    key = f"order-{secrets.token_hex(3)}"
    feature = Feature(key, scope="user", enable_chance=1.0, allow_overrides="user", registry=registry)
    user_scope = f"user:{users.a}"
    with as_tenant(world.a, user=users.a):
        assert Flags(session, registry).explain(feature).reason == "rollout"
        set_override(session, feature, False, scope=EVERY_SCOPE, granted={"admin"}, registry=registry)
        assert Flags(session, registry).explain(feature).reason == "tenant-override"
        assert not Flags(session, registry).is_enabled(feature)
        set_override(session, feature, True, registry=registry)  # the user's own scope beats the tenant's '*'
        explained = Flags(session, registry).explain(feature)
        assert (explained.enabled, explained.reason, explained.scope) == (True, "tenant-override", user_scope)
        session.commit()
    with bypass.session(reason="test: kill switch") as admin:
        set_global_override(admin, feature, False, registry=registry)
    with as_tenant(world.a, user=users.a):
        explained = Flags(session, registry).explain(feature)
        assert (explained.enabled, explained.reason) == (False, "global-override")  # the kill switch holds
        session.rollback()
    with bypass.session(reason="test: lift the kill switch") as admin:
        assert clear_global_override(admin, feature, registry=registry)
        assert not clear_global_override(admin, feature, registry=registry)


def test_missing_scope_falls_back_to_star_overrides_then_the_default(
    world: World, registry: FeatureRegistry, session: Session
) -> None:
    feature = Feature(
        "anonymous", scope="user", enable_chance=1.0, default=True, allow_overrides="admin", registry=registry
    )
    with as_tenant(world.a):  # a tenant, no user
        assert Flags(session, registry).explain(feature).reason == "default"
        set_override(session, feature, False, scope=EVERY_SCOPE, granted={"admin"}, registry=registry)
        assert Flags(session, registry).explain(feature).reason == "tenant-override"
        session.rollback()


@pytest.mark.rls_policy
def test_overrides_are_isolated_by_tenant(
    world: World, users: Users, registry: FeatureRegistry, session: Session
) -> None:
    key = f"isolated-{secrets.token_hex(3)}"
    feature = Feature(key, scope="tenant", allow_overrides="admin", registry=registry)
    with as_tenant(world.a):
        set_override(session, feature, True, granted={"admin"}, registry=registry)
        session.commit()
        assert Flags(session, registry).is_enabled(feature)
        session.rollback()
    with as_tenant(world.b):
        # Tenant b asks for tenant a's exact scope: the row exists, but not for b.
        assert [o for o in list_overrides(session) if o.feature == key] == []
        rows = session.execute(
            text("SELECT count(*) FROM rls_tenancy.feature_overrides WHERE feature = :key"), {"key": key}
        ).scalar_one()
        assert rows == 0
        hijack = session.execute(
            text("UPDATE rls_tenancy.feature_overrides SET enabled = false WHERE feature = :key"), {"key": key}
        )
        assert hijack.rowcount == 0  # type: ignore[attr-defined]
        session.rollback()
    with as_tenant(world.a):
        assert [o.enabled for o in list_overrides(session) if o.feature == key] == [True]
        session.rollback()


@pytest.mark.rls_policy
def test_the_app_role_cannot_write_global_or_foreign_overrides(world: World, session: Session) -> None:
    for tenant in (None, world.b):
        with as_tenant(world.a), pytest.raises(DBAPIError, match="row-level security"):
            session.execute(
                text(
                    "INSERT INTO rls_tenancy.feature_overrides (tenant_id, feature, scope, enabled) "
                    "VALUES (:tenant, 'sneaky', '*', true)"
                ),
                {"tenant": tenant},
            )
        session.rollback()


def test_permission_rules(world: World, users: Users, registry: FeatureRegistry, session: Session) -> None:
    admin_only = Feature("admin-only", scope="user", allow_overrides="admin", registry=registry)
    self_service = Feature("self-service", scope="user", allow_overrides="user", registry=registry)
    locked = Feature("locked", scope="user", registry=registry)
    own, other = f"user:{users.a}", f"user:{users.a + 1}"
    assert may_override(self_service, own, set(), users.a)
    assert not may_override(self_service, other, set(), users.a)
    assert may_override(self_service, other, {"admin"}, users.a)
    assert not may_override(admin_only, own, {"projects:write"}, users.a)
    assert may_override(admin_only, own, {"admin"}, users.a)
    assert not may_override(locked, own, {"admin"}, users.a)
    with as_tenant(world.a, user=users.a):
        set_override(session, self_service, True, registry=registry)
        for feature, scope, granted in (
            (self_service, other, frozenset()),
            (admin_only, own, frozenset({"projects:write"})),
            (locked, EVERY_SCOPE, frozenset({"admin"})),
        ):
            with pytest.raises(OverrideNotAllowedError, match="may not override"):
                set_override(session, feature, True, scope=scope, granted=granted, registry=registry)
            with pytest.raises(OverrideNotAllowedError):
                clear_override(session, feature, scope=scope, granted=granted, registry=registry)
        session.rollback()


def test_bad_override_input(world: World, registry: FeatureRegistry, session: Session) -> None:
    feature = Feature("inputs", scope="user", allow_overrides="admin", registry=registry)
    with pytest.raises(NoTenantError):
        set_override(session, feature, True, scope="*", granted={"admin"}, registry=registry)  # no tenant
    with as_tenant(world.a):
        with pytest.raises(UnknownFeatureError):
            set_override(session, "undeclared", True, scope="*", granted={"admin"}, registry=registry)
        with pytest.raises(UsageError, match="no 'inputs' scope"):
            set_override(session, feature, True, granted={"admin"}, registry=registry)  # no user here
        for scope in ("", "x" * 201, "nul\x00"):
            with pytest.raises(UsageError, match="a scope is"):
                set_override(session, feature, True, scope=scope, granted={"admin"}, registry=registry)
        with pytest.raises(UsageError, match="on .True. or off"):
            set_override(session, feature, "yes", scope="*", granted={"admin"}, registry=registry)  # type: ignore[arg-type]
        for granted in (None, "admin", 3, [None], [["admin"]]):
            with pytest.raises(UsageError, match="granted must be a list of scopes"):
                set_override(session, feature, True, scope="*", granted=granted, registry=registry)  # type: ignore[arg-type]
            with pytest.raises(UsageError, match="granted must be a list of scopes"):
                clear_override(session, feature, scope="*", granted=granted, registry=registry)  # type: ignore[arg-type]
        assert [o for o in list_overrides(session) if o.feature == "inputs"] == []
        session.rollback()


def test_override_changes_are_audited_in_the_same_transaction(
    world: World, registry: FeatureRegistry, session: Session
) -> None:
    key = f"audited-{secrets.token_hex(3)}"
    feature = Feature(key, scope="tenant", allow_overrides="admin", registry=registry)
    count = text("SELECT count(*) FROM rls_tenancy.audit_log WHERE action LIKE 'feature.%' AND data->>'feature' = :key")
    with as_tenant(world.a):
        set_override(session, feature, True, granted={"admin"}, registry=registry)
        assert session.execute(count, {"key": key}).scalar_one() == 1
        session.rollback()
        assert session.execute(count, {"key": key}).scalar_one() == 0  # rolled back together
        set_override(session, feature, True, granted={"admin"}, registry=registry)
        assert clear_override(session, feature, granted={"admin"}, registry=registry)
        assert not clear_override(session, feature, granted={"admin"}, registry=registry)
        session.commit()
        actions = session.execute(
            text("SELECT action FROM rls_tenancy.audit_log WHERE data->>'feature' = :key ORDER BY id"), {"key": key}
        ).scalars()
        assert list(actions) == ["feature.override_set", "feature.override_cleared"]
        session.rollback()


def test_all_flags_cost_one_query(world: World, users: Users, registry: FeatureRegistry, app_engine: Engine) -> None:
    features = [Feature(f"cheap-{n}", scope=("ip", "user", "tenant")[n % 3], registry=registry) for n in range(12)]
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    from sqlalchemy import event

    event.listen(app_engine, "before_cursor_execute", count)
    try:
        with (
            as_tenant(world.a, user=users.a),
            event_origin(ip="10.1.2.3"),
            Session(app_engine) as session,
            flags_for(session, registry) as flags,
        ):
            for _ in range(3):
                for feature in features:
                    assert current_flags().is_enabled(feature) is False
                    assert feature.evaluate() is False
    finally:
        event.remove(app_engine, "before_cursor_execute", count)
    assert flags.queries == 1
    assert len(statements) == 1 and "feature_overrides" in statements[0]


def test_a_job_looping_over_tenants_in_one_block_gets_each_tenants_values(
    world: World, users: Users, registry: FeatureRegistry, session: Session
) -> None:
    tenant_wide = Feature(
        f"job-tenant-{secrets.token_hex(3)}", scope="tenant", allow_overrides="admin", registry=registry
    )
    per_user = Feature(f"job-user-{secrets.token_hex(3)}", scope="user", allow_overrides="user", registry=registry)
    with as_tenant(world.a, user=users.a):
        set_override(session, tenant_wide, True, scope=EVERY_SCOPE, granted={"admin"}, registry=registry)
        set_override(session, per_user, True, registry=registry)
        session.commit()
    seen = []
    with flags_for(session, registry) as flags:
        for tenant, user in ((world.a, users.a), (world.b, users.b), (world.a, None), (world.a, users.a)):
            with as_tenant(tenant, user=user):
                explained = flags.explain(tenant_wide)
                seen.append((explained.enabled, explained.reason, explained.scope, per_user.evaluate()))
                session.commit()
    assert seen == [
        (True, "tenant-override", f"tenant:{world.a}", True),
        (False, "default", f"tenant:{world.b}", False),  # not a's override, nor a's scope
        (True, "tenant-override", f"tenant:{world.a}", False),  # a's, but not its user's own
        (True, "tenant-override", f"tenant:{world.a}", True),
    ]
    assert flags.queries == 4  # once per change of tenant or user, not per evaluation


def test_evaluate_needs_flags_in_context(registry: FeatureRegistry) -> None:
    feature = Feature("contextless", scope="user", registry=registry)
    with pytest.raises(UsageError, match="no feature flags in context"):
        feature.evaluate()


def test_a_failing_scope_function_fails_its_own_feature_only(world: World, session: Session) -> None:
    registry = FeatureRegistry()

    def broken(_feature: Feature) -> str:
        raise RuntimeError("the plan service is down")

    fine = Feature("fine", scope="tenant", default=True, registry=registry)
    fragile = Feature("fragile", scope=broken, registry=registry)
    with as_tenant(world.a):
        flags = Flags(session, registry)
        assert flags.is_enabled(fine)
        with pytest.raises(RuntimeError, match="plan service"):
            flags.is_enabled(fragile)
        assert flags.queries == 1
        session.rollback()


def test_global_overrides_are_for_every_scope_only(bypass: UnsafeBypass, registry: FeatureRegistry) -> None:
    """A global row naming a user or an address would show every tenant who that is."""
    Feature("everywhere", scope="user", registry=registry)
    with (
        bypass.session(reason="test: a per-user global override") as admin,
        pytest.raises(DBAPIError, match="global_every_scope"),
    ):
        admin.execute(
            text(
                "INSERT INTO rls_tenancy.feature_overrides (tenant_id, feature, scope, enabled) "
                "VALUES (NULL, 'everywhere', 'user:2', true)"
            )
        )
