"""What each part of an audited event costs PostgreSQL: ``python -m benchmarks.audit_parts``.

The audit rows of the report compare whole events with plain inserts. This
takes the seal apart, on a throwaway database: pgbench runs
``benchmarks/pgbench/audited.sql`` (eight clients, a tenant each, as the
application role) with the seal trigger replaced, step by step, by less of
itself, and ``plain.sql`` before and after each round as the baseline. The
steps take turns round by round, so a machine whose speed drifts slows them
alike. Printed per step: the median share of the plain insert's rate, and
the server CPU per event that share implies on this machine's cores.

One more step measures an alternative rather than a part: events committed
unsealed and chained in batches, every 20 ms, by a sealer running beside the
writers (``pgbench/batched_sealer.sql``, a prototype no migration installs),
on chains of their own; the library's verifier then checks the chains it
wrote. It needs ``pgbench`` (PostgreSQL's client tools) and changes nothing
that is shipped: the database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from sqlalchemy.engine import URL

from rls_tenancy.testing.database import tenancy_database
from rls_tenancy.testing.server import find_bindir, postgres_server

SCRIPTS = Path(__file__).parent / "pgbench"


def _seal(body: bytes) -> bytes:
    """The seal trigger's function with ``body`` (statements before its ``RETURN NULL``), as shipped otherwise."""
    return (
        b"CREATE OR REPLACE FUNCTION rls_tenancy.seal_audit_event() RETURNS trigger LANGUAGE plpgsql"
        b" SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$ BEGIN " + body + b" RETURN NULL; END $fn$"
    )


#: Each step adds to the one before; the last is the seal as installed
#: (None: the seal trigger disabled; "": the shipped definition).
STEPS: dict[str, bytes | None] = {
    "log_event, no seal": None,
    "+ a seal trigger doing nothing": _seal(b""),
    "+ the chain head's update": _seal(
        b"UPDATE rls_tenancy.audit_chain_heads h SET seq = h.seq + 1, last_id = NEW.id WHERE h.chain = NEW.tenant_id;"
    ),
    "+ the hash, into the head": _seal(
        b"UPDATE rls_tenancy.audit_chain_heads h SET seq = h.seq + 1, last_id = NEW.id,"
        b" hash = rls_tenancy.audit_event_hash(NEW.id, NEW.tenant_id, h.seq + 1, NEW.user_id, NEW.db_role,"
        b" NEW.action, NEW.message, NEW.ip, NEW.request_id, NEW.data, NEW.created_at, h.hash)"
        b" WHERE h.chain = NEW.tenant_id;"
    ),
    "the seal as shipped (+ the event's update)": b"",
}
#: The alternative, measured beside the steps, on tenants of its own: LATER on.
BATCHED = "instead: sealed in batches after commit"
LATER = 9
_WAITING = "SELECT count(*) FROM rls_tenancy.audit_log WHERE tenant_id >= %s AND hash IS NULL"
_BROKEN = "SELECT count(*) FROM generate_series(%s::bigint, %s::bigint) AS t, rls_tenancy.verify_audit_chain(t)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit_parts", description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=2, help="per pgbench run")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    pgbench = find_pgbench()
    if pgbench is None:
        raise SystemExit("pgbench is needed: install PostgreSQL's client tools (Debian: postgresql-client)")
    # Unsigned, always: the pgbench scripts bind with a bare set_config, and what is measured is the seal.
    with (
        postgres_server() as server_url,
        tenancy_database(server_url, signed=False) as db,
        tempfile.TemporaryDirectory() as tmp,
    ):
        later = _later_script(Path(tmp))
        with _connect(db.superuser_url) as su:
            shipped = su.execute("SELECT pg_get_functiondef('rls_tenancy.seal_audit_event()'::regprocedure)").fetchone()
            assert shipped is not None
            as_shipped = str(shipped[0]).encode()
            definitions = {step: None if body is None else body or as_shipped for step, body in STEPS.items()}
            su.execute((SCRIPTS / "setup.sql").read_bytes().replace(b"\\ir plain_table.sql", b""))
            su.execute((SCRIPTS / "plain_table.sql").read_bytes())
            su.execute("INSERT INTO rls_tenancy.audit_chain_heads (chain) SELECT generate_series(0, 8)")
            su.execute(
                "INSERT INTO rls_tenancy.tenants (slug, name)"
                " SELECT 'pgbench-' || n, 'pgbench ' || n FROM generate_series(%s::integer, %s::integer) AS n",
                (LATER, LATER + 7),
            )
            su.execute((SCRIPTS / "batched_sealer.sql").read_bytes())

            def run(script: str | Path) -> float:
                return _tps(pgbench, db.app_url, SCRIPTS / script, args.clients, args.seconds)

            backlog: list[int] = []  # events not yet sealed as each run ends

            def batched() -> float:
                _install(su, None)
                su.execute(
                    "CREATE INDEX bench_audit_log_unsealed ON rls_tenancy.audit_log (tenant_id, id) WHERE hash IS NULL"
                )
                sealer = _sealer(pgbench, db.superuser_url, 2 * args.seconds + 1)
                try:
                    run(later)
                    rate = run(later)
                    backlog.append(_count(su, _WAITING, LATER))  # the sealer still running
                finally:
                    _, failure = sealer.communicate()  # never killed: its backend could go on sealing
                if sealer.returncode:
                    raise RuntimeError(f"the sealer failed: {failure[-500:]}")
                su.execute("SELECT public.bench_seal_pending(%s)", (LATER,))  # what came after its last batch
                su.execute("DROP INDEX rls_tenancy.bench_audit_log_unsealed")
                return rate

            steps = [*STEPS, BATCHED]
            shares: dict[str, list[float]] = {step: [] for step in steps}
            plain: list[float] = []
            for number in range(args.rounds):
                order = steps[number % len(steps) :] + steps[: number % len(steps)]
                before, rates = run("plain.sql"), {}
                for step in order:
                    if step == BATCHED:
                        rates[step] = batched()
                        continue
                    _install(su, definitions[step])
                    run("audited.sql")  # plans cached anew
                    rates[step] = run("audited.sql")
                plain.append((before + run("plain.sql")) / 2)
                for step, rate in rates.items():
                    shares[step].append(rate / plain[-1])
            broken = _count(su, _BROKEN, LATER, LATER + 7)
            left = _count(su, _WAITING, LATER)
    base = statistics.median(plain)
    cores = os.cpu_count() or 1
    print(f"plain insert: {base:.0f} transactions/s ({args.clients} clients, {cores} cores)")
    for step, values in shares.items():
        share = statistics.median(values)
        extra = (1 / share - 1) * cores / base * 1e6
        print(f"{step:45s} {share:.3f} of the plain rate, about {extra:.0f} µs more CPU per event")
    print(
        f"chains sealed in batches: {broken} broken, {left} events left unsealed;"
        f" at most {max(backlog)} were waiting for it as a run ended"
    )
    return 0


def _install(su: psycopg.Connection[TupleRow], definition: bytes | None) -> None:
    """The seal trigger disabled (None), or enabled with this definition of its function."""
    action = sql.SQL("DISABLE" if definition is None else "ENABLE")
    su.execute(sql.SQL("ALTER TABLE rls_tenancy.audit_log {} TRIGGER audit_log_seal").format(action))
    if definition is not None:
        su.execute(definition)


def _count(su: psycopg.Connection[TupleRow], query: LiteralString, *params: int) -> int:
    found = su.execute(query, params).fetchone()
    assert found is not None
    return int(found[0])


def _later_script(directory: Path) -> Path:
    """``audited.sql`` for the tenants from LATER on, whose chains only the batched sealer seals."""
    audited = (SCRIPTS / "audited.sql").read_text()
    first = "\\set t :client_id + 1\n"
    assert first in audited
    later = directory / "audited_later.sql"
    later.write_text(audited.replace(first, f"\\set t :client_id + {LATER}\n"))
    return later


def _pgbench(pgbench: str, url: URL, script: Path, *options: str) -> tuple[list[str], dict[str, str]]:
    """The command running ``script`` as ``url``'s role, and its environment."""
    command = [pgbench, "-n", *options, "-h", str(url.host), "-p", str(url.port), "-U", str(url.username)]
    return [*command, "-f", str(script), str(url.database)], {**os.environ, "PGPASSWORD": url.password or ""}


def _tps(pgbench: str, url: URL, script: Path, clients: int, seconds: int) -> float:
    options = ("-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds))
    command, env = _pgbench(pgbench, url, script, *options)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    found = re.search(r"tps = ([\d.]+)", done.stdout)
    if found is None:
        raise RuntimeError(f"pgbench said no rate: {done.stdout[-500:]} {done.stderr[-500:]}")
    return float(found.group(1))


def _sealer(pgbench: str, url: URL, seconds: int) -> subprocess.Popen[str]:
    """One pgbench client running ``sealer.sql`` for ``seconds``, as ``url``'s role (a superuser)."""
    options = ("-c", "1", "-T", str(seconds), "-D", f"first={LATER}")
    command, env = _pgbench(pgbench, url, SCRIPTS / "sealer.sql", *options)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def find_pgbench() -> str | None:
    """pgbench on the PATH, else beside the PostgreSQL server binaries, else None."""
    bindir = find_bindir()
    beside = None if bindir is None else bindir / "pgbench"
    return shutil.which("pgbench") or (str(beside) if beside is not None and beside.exists() else None)


def _connect(url: URL) -> psycopg.Connection[TupleRow]:
    return psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True)


if __name__ == "__main__":
    raise SystemExit(main())
