"""Finding or starting a PostgreSQL server, in a fixed order of preference.

1. ``$RLS_TENANCY_TEST_DATABASE_URL``: an existing server (superuser URL).
2. testcontainers' PostgreSQL, when a Docker engine answers.
3. A throwaway cluster from local binaries (``initdb`` on PATH, ``pg_config
   --bindir``, ``/usr/lib/postgresql/*/bin``...), run as an unprivileged OS
   user when this process is root, on a free loopback port, deleted after.
4. The same from the ``pgserver`` wheel (``pip install rls-tenancy[pgserver]``).

``$RLS_TENANCY_TEST_POSTGRES`` (``container``, ``local`` or ``pgserver``,
comma-separated) restricts the automatic choices.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

from rls_tenancy.binding.urls import database_url

ENV_URL = "RLS_TENANCY_TEST_DATABASE_URL"
ENV_ORDER = "RLS_TENANCY_TEST_POSTGRES"

_BINDIR_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
)
_SERVER_SETTINGS = (
    "listen_addresses=127.0.0.1",
    "fsync=off",  # throwaway data: durability only costs time
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)

Strategy = Callable[[list[str]], "AbstractContextManager[URL] | None"]


class NoPostgresError(RuntimeError):
    """No PostgreSQL server could be found or started."""


@contextmanager
def postgres_server() -> Iterator[URL]:
    """Superuser URL of a PostgreSQL server, valid inside the block."""
    given = os.environ.get(ENV_URL)
    if given:
        yield database_url(given)
        return
    reasons: list[str] = []
    for name in _order():
        server = _STRATEGIES[name](reasons)
        if server is not None:
            with server as url:
                yield url
            return
    raise NoPostgresError(
        "no PostgreSQL server for the tests. Provide one of:\n"
        f"  - an existing server: export {ENV_URL}=postgresql://superuser:password@host:port/postgres\n"
        "  - a Docker engine, for testcontainers (pip install 'rls-tenancy[testing]')\n"
        "  - local PostgreSQL server binaries (initdb, postgres), e.g. apt-get install postgresql,\n"
        "    or the pgserver wheel: pip install 'rls-tenancy[pgserver]'\n"
        "What was tried:\n  - " + "\n  - ".join(reasons)
    )


def _order() -> list[str]:
    wanted = [part.strip() for part in os.environ.get(ENV_ORDER, "").split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(_STRATEGIES))
    if unknown:
        raise NoPostgresError(f"{ENV_ORDER} names unknown strategies {unknown}; use {sorted(_STRATEGIES)}")
    return wanted or list(_STRATEGIES)


def _container(reasons: list[str]) -> AbstractContextManager[URL] | None:
    try:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers before the community split
            from testcontainers.postgres import PostgresContainer
    except ImportError:
        reasons.append("container: testcontainers is not installed")
        return None
    problem = _docker_problem()
    if problem:
        reasons.append(f"container: {problem}")
        return None

    @contextmanager
    def run() -> Iterator[URL]:
        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            yield database_url(container.get_connection_url())

    return run()


def _docker_problem() -> str | None:
    """Why no Docker engine can be used, or None when one answers ``/_ping``."""
    host = os.environ.get("DOCKER_HOST", "")
    try:
        if host.startswith("tcp://"):
            address, _, port = host.removeprefix("tcp://").partition(":")
            sock = socket.create_connection((address, int(port or 2375)), timeout=3)
        else:
            candidates = (
                [host.removeprefix("unix://")]
                if host
                else ["/var/run/docker.sock", str(Path.home() / ".docker/run/docker.sock")]
            )
            path = next((p for p in candidates if os.path.exists(p)), None)
            if path is None:
                return "no Docker engine socket (" + ", ".join(candidates) + ")"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(3)
            sock.connect(path)
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(4096)
    except (OSError, ValueError) as error:
        return f"the Docker engine does not answer ({error})"
    return (
        None
        if answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n")[0]
        else ("the Docker engine answered /_ping with an error")
    )


def find_bindir() -> Path | None:
    """A directory holding ``initdb`` and ``postgres``, newest version first."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
    for pattern in _BINDIR_GLOBS:
        candidates.extend(Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True))
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


def _version_key(path: str) -> tuple[int, ...]:
    digits = "".join(c if c.isdigit() else " " for c in path).split()
    return tuple(int(d) for d in digits)


def _local(reasons: list[str]) -> AbstractContextManager[URL] | None:
    bindir = find_bindir()
    if bindir is None:
        reasons.append("local: no initdb/postgres binaries on PATH, from pg_config, or in the usual places")
        return None
    return _local_cluster(bindir)


@contextmanager
def _local_cluster(bindir: Path) -> Iterator[URL]:
    with local_cluster(bindir) as cluster:
        yield cluster.url


class LocalCluster:
    """A throwaway cluster from local binaries that can be stopped and started again.

    Its data survives a restart; its port may not (a free one is taken each
    start), so read :attr:`url` after :meth:`restart`.
    """

    def __init__(self, bindir: Path, root: Path, run_as: pwd.struct_passwd | None, password: str) -> None:
        self._bindir, self._root, self._run_as, self._password = bindir, root, run_as, password
        self._running = contextlib.ExitStack()
        self.port = 0

    @property
    def url(self) -> URL:
        return URL.create("postgresql+psycopg", "postgres", self._password, "127.0.0.1", self.port, "postgres")

    def start(self) -> None:
        self.port = self._running.enter_context(
            _running_postgres(self._bindir, self._root, self._run_as, self._password)
        )

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, as in a real restart."""
        self._running.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def wal_position(self) -> str:
        """The primary's current WAL position, for :meth:`wait_for_replay` on a standby of it.

        Where the last record was inserted: with ``synchronous_commit=off``
        (the throwaway clusters') a commit may not be written out yet.
        """
        with _superuser(self) as conn:
            return str(_one(conn, "SELECT pg_catalog.pg_current_wal_insert_lsn()::text"))

    def wait_for_replay(self, position: str, timeout: float = 30) -> None:
        """Wait until this standby has replayed the primary's WAL up to ``position``."""
        deadline = time.monotonic() + timeout
        with _superuser(self) as conn:
            while not _one(conn, "SELECT pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn", (position,)):
                if time.monotonic() > deadline:
                    raise NoPostgresError(f"the standby did not replay up to {position} in {timeout} s")
                time.sleep(0.02)

    def pause_replay(self) -> None:
        """Stop applying the primary's changes (as a lagging standby would), until :meth:`resume_replay`."""
        with _superuser(self) as conn:
            conn.execute("SELECT pg_catalog.pg_wal_replay_pause()")
            while _one(conn, "SELECT pg_catalog.pg_get_wal_replay_pause_state()") != "paused":
                time.sleep(0.02)

    def resume_replay(self) -> None:
        with _superuser(self) as conn:
            conn.execute("SELECT pg_catalog.pg_wal_replay_resume()")


def _superuser(cluster: LocalCluster) -> psycopg.Connection[tuple[Any, ...]]:
    url = cluster.url
    return psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname="postgres", autocommit=True
    )


def _one(conn: psycopg.Connection[tuple[Any, ...]], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return row[0]


@contextmanager
def _terminated_as_interrupted() -> Iterator[None]:
    """Inside the block, SIGTERM (a cancelled CI job, ``kill``) interrupts as Ctrl-C does.

    Its default action ends the process at once, and the cluster, started in
    a session of its own, would outlive it with its data. As an interrupt,
    the blocks that started it stop and remove it on the way out (pytest
    also runs its teardowns, and stops). Only where nothing handles SIGTERM
    yet, in the main thread (where Python runs signal handlers); the default
    comes back after the block.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def interrupt(_number: int, _frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def local_cluster(bindir: Path | None = None) -> Iterator[LocalCluster]:
    """A new cluster from local binaries, running for the block, deleted after (also when SIGTERM ends it)."""
    with _terminated_as_interrupted(), _new_local_cluster(bindir) as cluster:
        yield cluster


@contextmanager
def _new_local_cluster(bindir: Path | None) -> Iterator[LocalCluster]:
    bindir = bindir or find_bindir()
    if bindir is None:
        raise NoPostgresError("no local PostgreSQL binaries (initdb, postgres)")
    run_as = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="rls-tenancy-pg-"))
    try:
        password = secrets.token_urlsafe(18)
        (root / "pwfile").write_text(password + "\n")
        if run_as is not None:
            for path in (root, root / "pwfile"):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        _as_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                f"--pwfile={root / 'pwfile'}",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            run_as,
            log=root / "initdb.log",
        )
        cluster = LocalCluster(bindir, root, run_as, password)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def standby_cluster(primary: LocalCluster) -> Iterator[LocalCluster]:
    """A hot standby streaming from ``primary`` (``pg_basebackup``), running for the block, deleted after.

    It holds what the primary holds (databases, roles, passwords) and answers
    read-only transactions; the primary's later changes reach it as its WAL
    is replayed (:meth:`LocalCluster.wait_for_replay`).
    """
    run_as = primary._run_as
    root = Path(tempfile.mkdtemp(prefix="rls-tenancy-standby-"))
    try:
        if run_as is not None:
            os.chown(root, run_as.pw_uid, run_as.pw_gid)
        url = primary.url
        conninfo = make_conninfo(host=url.host, port=url.port, user=url.username, password=url.password)
        _as_user(
            [
                str(_tool(primary._bindir, "pg_basebackup")),
                "--pgdata",
                str(root / "data"),
                "--dbname",
                conninfo,
                "--write-recovery-conf",  # standby.signal, and primary_conninfo with the password
                "--checkpoint=fast",
                "--wal-method=stream",
                "--no-sync",
            ],
            run_as,
            log=root / "basebackup.log",
        )
        standby = LocalCluster(primary._bindir, root, run_as, primary._password)
        standby.start()
        try:
            yield standby
        finally:
            standby.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _tool(bindir: Path, name: str) -> Path:
    """``name`` beside ``postgres``: in ``bindir``, or where its ``postgres`` links to (``/usr/local/bin``...)."""
    for directory in (bindir, (bindir / "postgres").resolve().parent):
        if (directory / name).is_file():
            return directory / name
    raise NoPostgresError(f"no {name} beside {bindir / 'postgres'}")


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise NoPostgresError("running as root, and no 'postgres' or 'nobody' user to run PostgreSQL as")


def _as_user(args: list[str], run_as: pwd.struct_passwd | None, *, log: Path) -> None:
    with log.open("w") as out:
        result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, **_user_kwargs(run_as))
    if result.returncode != 0:
        raise NoPostgresError(f"{args[0]} failed:\n{log.read_text()}")


def _user_kwargs(run_as: pwd.struct_passwd | None) -> dict[str, Any]:
    if run_as is None:
        return {}
    env = {**os.environ, "HOME": run_as.pw_dir, "USER": run_as.pw_name, "LOGNAME": run_as.pw_name}
    return {"user": run_as.pw_uid, "group": run_as.pw_gid, "extra_groups": [], "env": env, "cwd": "/"}


@contextmanager
def _running_postgres(bindir: Path, root: Path, run_as: pwd.struct_passwd | None, password: str) -> Iterator[int]:
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = _free_port()
        args = [str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port), "-k", str(root)]
        for setting in _SERVER_SETTINGS:
            args += ["-c", setting]
        log = (root / "postgres.log").open("a")
        # A session of its own: a Ctrl-C in the terminal reaches us, not the
        # server, which is stopped (after our cleanup) by _stop.
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_user_kwargs(run_as)
        )
        try:
            if _wait_ready(process, port, password):
                yield port
                return
        finally:
            _stop(process)
            log.close()
    raise NoPostgresError(f"postgres did not start:\n{(root / 'postgres.log').read_text()[-4000:]}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(process: subprocess.Popen[bytes], port: int, password: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            psycopg.connect(
                host="127.0.0.1",
                port=port,
                user="postgres",
                password=password,
                dbname="postgres",
                connect_timeout=2,
            ).close()
            return True
        except psycopg.OperationalError:
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # fast shutdown
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pgserver(reasons: list[str]) -> AbstractContextManager[URL] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        reasons.append("pgserver: not installed (pip install 'rls-tenancy[pgserver]')")
        return None

    @contextmanager
    def run() -> Iterator[URL]:
        root = tempfile.mkdtemp(prefix="rls-tenancy-pgserver-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(root, cleanup_mode="delete")
        try:
            yield database_url(server.get_uri())
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server.cleanup()
            shutil.rmtree(root, ignore_errors=True)

    return run()


_STRATEGIES: dict[str, Strategy] = {"container": _container, "local": _local, "pgserver": _pgserver}


def can_provide() -> bool:
    """Whether a server is available without the pgserver wheel (used by ``make``)."""
    return bool(os.environ.get(ENV_URL)) or _docker_problem() is None or find_bindir() is not None


if __name__ == "__main__":  # exit 0 if a server is at hand (make calls can_provide() directly)
    raise SystemExit(0 if can_provide() else 1)
