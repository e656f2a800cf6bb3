"""The demo's feature flags: the seed's two examples, and a per-tenant beta."""

from __future__ import annotations

from datetime import UTC, datetime

from rls_tenancy.features import Feature
from rls_tenancy.flask import get_current_tenant

#: Tenants created after this date get the new dashboard unless they chose otherwise.
NEW_DASHBOARD_SINCE = datetime(2017, 1, 1, tzinfo=UTC)


def new_dashboard_default() -> bool:
    """The seed's callable default: newer tenants get the new dashboard."""
    tenant = get_current_tenant()
    return tenant is not None and tenant.created_at > NEW_DASHBOARD_SINCE


# The seed's "Random Features": 90 % of client addresses (the slide's `>` gave 10 %).
NEW_SIGN_IN_FLOW = Feature("new-sign-in-flow", scope="ip", enable_chance=0.9, allow_overrides="admin")

# The seed's "User Features": each user may opt in or out for themselves.
NEW_DASHBOARD = Feature("new-dashboard", scope="user", allow_overrides="user", default=new_dashboard_default)

# Half of the tenants, decided per tenant; their admins may switch it.
BETA_REPORTS = Feature("beta-reports", scope="tenant", enable_chance=0.5, allow_overrides="admin")
