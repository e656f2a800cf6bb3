"""PgBouncer in transaction pooling mode, in front of a test server.

Transaction pooling hands a server connection to a client for one
transaction and then to whoever is next, which is exactly where a tenant
bound for a whole session would leak. The binding is transaction-local, so
it must not; the concurrency suite runs through this to show it.

PgBouncer is found on ``PATH`` or in ``/usr/sbin`` (Debian's ``pgbouncer``
package; ``make test`` installs it when it runs as root on Debian). It is run
as an unprivileged user when this process is root, with its files in a
temporary directory, on a free loopback port.

Settings that matter for this library (see the README):

- ``pool_mode = transaction`` works: the tenant is bound per transaction.
- ``server_reset_query`` set to :data:`rls_tenancy.binding.engine.SESSION_RESET_SCRIPT`
  and ``server_reset_query_always = 1``: what one client's transaction leaves
  in the server session (a temp table, a holdable cursor, a setting) is
  discarded before the connection serves another client. The library resets
  a session when it changes tenants, but behind PgBouncer it cannot see who
  used the server connection last.
- Prepared statements: PgBouncer before 1.21 cannot follow them in
  transaction mode, so psycopg's automatic preparation must be off
  (``connect_args={"prepare_threshold": None}``); from 1.21 on, set
  ``max_prepared_statements`` instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from rls_tenancy.binding.engine import SESSION_RESET_SCRIPT
from rls_tenancy.testing.server import _free_port, _stop, _unprivileged_user, _user_kwargs

_SEARCH = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/opt/homebrew/bin")


#: The application_name of PgBouncer's server connections, to tell them apart.
APPLICATION_NAME = "rls_tenancy_pgbouncer"


class NoPgBouncerError(RuntimeError):
    """PgBouncer is not installed, or did not start."""


@dataclass(frozen=True)
class PgBouncer:
    port: int
    server_connections: int  # per database and user

    def url(self, url: URL) -> URL:
        """``url`` (a server URL) through PgBouncer."""
        return url.set(host="127.0.0.1", port=self.port)


def find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    for directory in _SEARCH:
        candidate = Path(directory) / "pgbouncer"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@contextmanager
def pgbouncer(
    server: URL, logins: Mapping[str, str], *, server_connections: int = 4, reset: bool = True
) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of ``server``'s host and port.

    ``logins`` maps each role that will connect to its password (PgBouncer
    logs in to the server with it); clients connect to PgBouncer without one.
    At most ``server_connections`` server connections per database and role.
    ``reset=False`` leaves out the session reset between clients, to show
    what it prevents.
    """
    binary = find_pgbouncer()
    if binary is None:
        raise NoPgBouncerError("pgbouncer is not installed (Debian/Ubuntu: apt-get install pgbouncer)")
    run_as = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="rls-tenancy-pgbouncer-"))
    try:
        port = _free_port()
        (root / "userlist.txt").write_text(
            "".join(f'"{_quoted(role)}" "{_quoted(password)}"\n' for role, password in logins.items())
        )
        (root / "pgbouncer.ini").write_text(_config(server, root, port, server_connections, reset))
        if run_as is not None:
            for path in (root, *root.iterdir()):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        log = (root / "stdout.log").open("w")
        process = subprocess.Popen(
            [binary, str(root / "pgbouncer.ini")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_user_kwargs(run_as),
        )
        try:
            _wait_ready(process, port, root)
            yield PgBouncer(port, server_connections)
        finally:
            _stop(process)
            log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _config(server: URL, root: Path, port: int, server_connections: int, reset: bool) -> str:
    return "\n".join(
        [
            "[databases]",
            f"* = host={server.host or '127.0.0.1'} port={server.port or 5432} application_name={APPLICATION_NAME}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            f"unix_socket_dir = {root}",
            "auth_type = trust",
            f"auth_file = {root / 'userlist.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {server_connections}",
            "max_client_conn = 500",
            f"logfile = {root / 'pgbouncer.log'}",
            f"pidfile = {root / 'pgbouncer.pid'}",
            f"server_reset_query = {SESSION_RESET_SCRIPT.decode() if reset else ''}",
            f"server_reset_query_always = {int(reset)}",
            "ignore_startup_parameters = extra_float_digits",
            "",
        ]
    )


def _quoted(value: str) -> str:
    return value.replace('"', '""')


def _wait_ready(process: subprocess.Popen[bytes], port: int, root: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    logs = "".join(path.read_text()[-2000:] for path in (root / "stdout.log", root / "pgbouncer.log") if path.exists())
    raise NoPgBouncerError(f"pgbouncer did not start:\n{logs}")
