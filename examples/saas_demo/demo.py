"""``make demo``: the demo SaaS app, served on 127.0.0.1 with two seeded tenants.

Uses ``$DATABASE_URL`` (a superuser URL) when set, else starts a throwaway
PostgreSQL. Creates a database of its own there, migrates it (the app's
migrations with rls_tenancy's as a branch), requires a signed tenant context
(with a key made for the run), seeds two tenants, shows what each
can reach, prints ``curl`` lines, and serves until Ctrl-C (or SIGTERM), after
which it drops the database and stops the server it started.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from alembic.config import Config
from flask import Flask
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import URL
from werkzeug.serving import make_server

from rls_tenancy import ContextKey, TokenKey, UnsafeBypass, as_tenant, bind_engine
from rls_tenancy.audit.chain import verification_report
from rls_tenancy.binding import database_url
from rls_tenancy.testing import postgres_server, tenancy_database
from rls_tenancy.testing.database import require_signing
from saas_demo.app import create_app
from saas_demo.models import Project
from saas_demo.seed import PASSWORD, Seeded, seed

ALEMBIC_INI = Path(__file__).parent / "alembic.ini"


@contextmanager
def _server() -> Iterator[tuple[URL, str]]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield database_url(given), "the server at $DATABASE_URL"
    else:
        with postgres_server() as url:
            yield url, "a throwaway PostgreSQL started for this run"


def _port(host: str, wanted: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind((host, wanted))
        except OSError:
            probe.bind((host, 0))  # taken: any free one will do
        port: int = probe.getsockname()[1]
        return port


def show_isolation(app: Flask, seeded: Seeded) -> None:
    """What each tenant sees through the API, and what reaching across gets."""
    client = app.test_client()
    for slug in seeded.tenants:
        token = seeded.tokens[f"{slug}/ci"]
        names = [p["name"] for p in client.get("/api/projects", headers=_bearer(token)).json["projects"]]  # type: ignore[index]
        print(f"  {slug} sees: {', '.join(names)}")
    victim = seeded.projects["globex"][0]
    acme = _bearer(seeded.tokens["acme/ci"])
    got = client.get(f"/api/projects/{victim}", headers=acme)
    print(f"  acme asks for globex's project #{victim}: {got.status_code} {got.json['message']}")  # type: ignore[index]
    batch = client.post(
        "/api/projects/batch-update", headers=acme, json={"ids": seeded.projects["globex"], "status": "archived"}
    )
    print(f"  acme batch-updates all of globex's project ids: updated {batch.json['updated']}")  # type: ignore[index]


def show_injection(engine: Engine, seeded: Seeded) -> None:
    """SQL injected into acme's transaction that names globex as the tenant: the setting alone is no tenant."""
    with as_tenant(seeded.tenants["acme"]), engine.connect() as conn:
        conn.execute(text("SELECT set_config('app.current_tenant', :t, true)"), {"t": str(seeded.tenants["globex"])})
        seen = conn.execute(select(func.count()).select_from(Project)).scalar_one()
    print(f"  SQL injected into acme's transaction sets app.current_tenant to globex: sees {seen} projects")


def show_audit(app: Flask, bypass: UnsafeBypass) -> None:
    """What acme's admin reads in the audit log, and the chains checked."""
    client = app.test_client()
    client.post("/api/login", json={"tenant": "acme", "email": "alice@acme.example", "password": "wrong"})
    client.post("/api/login", json={"tenant": "acme", "email": "alice@acme.example", "password": PASSWORD})
    events = client.get("/api/audit?limit=6").json["events"]  # type: ignore[index]
    for event in reversed(events):
        print(f"  #{event['seq'] or '-'} {event['action']}: {event['message'] or ''}")
    with bypass.connect(reason="demo: verify the audit log") as connection:
        lines, _problems = verification_report(connection)
    print(f"  hash chains checked: {lines[-1]}")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _curl_lines(base: str, seeded: Seeded) -> list[str]:
    acme, globex = seeded.tokens["acme/ci"], seeded.tokens["globex/ci"]
    victim = seeded.projects["globex"][0]
    return [
        f"curl -s -H 'Authorization: Bearer {acme}' {base}/api/projects",
        f"curl -s -H 'Authorization: Bearer {globex}' {base}/api/projects",
        f"curl -s -H 'Authorization: Bearer {acme}' {base}/api/projects/{victim}    # globex's: 404",
        f"curl -s -X POST -H 'Authorization: Bearer {acme}' -H 'Content-Type: application/json' "
        f'-d \'{{"name": "From curl"}}\' {base}/api/projects',
        f"curl -s -X POST -H 'Authorization: Bearer {seeded.tokens['acme/dashboard']}' "
        f"-H 'Content-Type: application/json' -d '{{\"name\": \"x\"}}' {base}/api/projects    # read-only: 403",
        f"curl -s -H 'Authorization: Bearer {globex}' -H 'Accept-Language: fr' {base}/api/me"
        "    # de: hank's own language beats the header",
        f"curl -s -c /tmp/demo-cookies -X POST -H 'Content-Type: application/json' "
        f'-d \'{{"tenant": "acme", "email": "alice@acme.example", "password": "{PASSWORD}"}}\' '
        f"{base}/api/login && curl -s -b /tmp/demo-cookies {base}/api/me",
        f"curl -s -b /tmp/demo-cookies '{base}/api/audit?limit=5'    # acme's audit log, for its admin",
        f"curl -s -H 'Authorization: Bearer {acme}' {base}/api/features    # each flag's value and why",
        f"curl -s -X PUT -b /tmp/demo-cookies -H 'Content-Type: application/json' "
        f"-d '{{\"enabled\": false}}' {base}/api/features/new-dashboard    # alice opts out, for herself",
    ]


def _serve(app: Flask, seeded: Seeded, host: str, port: int) -> None:
    server = make_server(host, _port(host, port), app, threaded=True)
    base = f"http://{host}:{server.server_port}"
    print(f"\nServing on {base} (Ctrl-C stops it). Try:\n")
    for line in _curl_lines(base, seeded):
        print(f"  {line}")
    print(flush=True)
    try:
        server.serve_forever()  # returns on Ctrl-C: werkzeug catches the KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        # Let the cleanup finish: a second Ctrl-C would leave a server running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.server_close()
    print("\nStopping: dropping the demo database.", flush=True)


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (docker stop) end serving, then the cleanup runs.

    SIGINT is set explicitly: a process started in the background by a
    non-interactive shell inherits it ignored.
    """

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "5000")))
    parser.add_argument("--no-serve", action="store_true", help="seed, show, and stop (no server)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="  [log] %(name)s: %(message)s")
    _stop_on_signals()
    with (
        _server() as (server_url, where),
        tenancy_database(server_url, alembic_config=Config(ALEMBIC_INI), signed=False) as db,  # signed below
    ):
        print(f"rls_tenancy demo on {where}; database {db.name}, requiring a signed tenant context")
        key = ContextKey.generate()  # in production: rls-tenancy context-key new, kept as a secret
        require_signing(db.superuser_url, key)  # what rls-tenancy context-key install and require do
        engines = [bind_engine(create_engine(db.app_url), context_key=key), create_engine(db.bypass_url)]
        bypass = UnsafeBypass(engines[1])
        token_key = TokenKey.generate()  # in production: rls-tenancy token-key new, kept as a secret
        seeded = seed(engines[0], bypass, token_key)
        app = create_app(
            db.app_url, db.bypass_url, RLS_TENANCY_CONTEXT_KEY=str(key), RLS_TENANCY_TOKEN_KEYS=str(token_key)
        )
        tenancy = app.extensions["rls_tenancy"]
        engines += [tenancy.engine, tenancy.audit_engine] + ([] if tenancy.bypass is None else [tenancy.bypass.engine])
        try:
            print("Two tenants, isolated by PostgreSQL row level security:")
            show_isolation(app, seeded)
            show_injection(engines[0], seeded)
            print("Acme's audit log, as its admin reads it (GET /api/audit):")
            show_audit(app, bypass)
            if not args.no_serve:
                _serve(app, seeded, args.host, args.port)
        finally:
            for engine in engines:
                engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
