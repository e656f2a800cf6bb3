"""The test harness itself: where the server comes from, and how it fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from sqlalchemy.engine import URL

from rls_tenancy.binding import database_url
from rls_tenancy.testing import server
from rls_tenancy.testing.server import ENV_ORDER, ENV_URL, NoPostgresError, postgres_server

ROOT = Path(__file__).parents[2]


def _connect(url: URL) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))


def test_an_explicit_url_wins(rls_postgres_url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    given = rls_postgres_url.set(drivername="postgresql").render_as_string(hide_password=False)
    monkeypatch.setenv(ENV_URL, given)
    monkeypatch.setenv(ENV_ORDER, "pgserver")  # would fail if it were consulted
    with postgres_server() as url:
        assert url == rls_postgres_url


def test_no_server_fails_loudly_naming_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.setenv(ENV_ORDER, "container")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(NoPostgresError) as caught, postgres_server():
        pass
    message = str(caught.value)
    for option in (ENV_URL, "Docker engine", "local PostgreSQL server binaries", "pgserver"):
        assert option in message
    assert "/nonexistent/docker.sock" in message


def test_unknown_strategy_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.setenv(ENV_ORDER, "local,cloud")
    with pytest.raises(NoPostgresError, match="cloud"), postgres_server():
        pass


def test_local_cluster_runs_unprivileged_and_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.setenv(ENV_ORDER, "local")
    if server.find_bindir() is None:  # a Docker-only machine: the failure must say what is missing
        with pytest.raises(NoPostgresError, match="no initdb/postgres binaries"), postgres_server():
            pass
        return
    with postgres_server() as url, _connect(url) as conn:
        data_directory = str(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
        owner = Path(data_directory).stat().st_uid
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    # As root, the cluster belongs to an unprivileged user (initdb refuses root).
    assert owner != 0 if os.geteuid() == 0 else owner == os.geteuid()
    assert not Path(data_directory).exists()


@pytest.fixture()
def fake_docker(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket that answers like a Docker engine, with the status line we choose."""
    path = tmp_path / "docker.sock"
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(answers[0])

    thread = threading.Thread(target=serve)
    thread.start()
    yield path, answers
    stop.set()
    thread.join()
    listener.close()


def test_docker_detection_asks_the_engine(
    fake_docker: tuple[Path, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, answers = fake_docker
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    assert server._docker_problem() is None
    answers[0] = b"HTTP/1.1 500 Internal Server Error\r\n\r\n"
    assert server._docker_problem() == "the Docker engine answered /_ping with an error"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert "does not answer" in (server._docker_problem() or "")


def test_docker_compose_file_runs_postgres_and_the_demo() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert postgres["environment"]["POSTGRES_PASSWORD"]
    assert any(str(port).endswith(":5432") for port in postgres["ports"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    demo = compose["services"]["demo"]
    assert demo["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = demo["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql://postgres:") and "@postgres:5432/" in url
    assert "python -m saas_demo" in demo["command"][-1]
    assert any(str(port).endswith(":5000") for port in demo["ports"])


@pytest.mark.parametrize(
    ("stop", "sigint_ignored"),
    [
        pytest.param(signal.SIGINT, False, id="ctrl-c"),
        pytest.param(signal.SIGTERM, False, id="kill"),
        pytest.param(signal.SIGHUP, False, id="terminal-closed"),
        # A job started with `&` by a non-interactive shell inherits SIGINT ignored.
        pytest.param(signal.SIGINT, True, id="background-job-interrupted"),
    ],
)
def test_the_postgres_command_serves_a_throwaway_server_until_stopped(stop: int, sigint_ignored: bool) -> None:
    """``rls-tenancy postgres``: a development server found or started as the plugin does, gone when stopped.

    Before SIGTERM and SIGHUP were handled, they killed the command and left
    its server running with its data; so did SIGINT where it was ignored.
    """
    env = {key: value for key, value in os.environ.items() if key not in (ENV_URL, "DATABASE_URL")}
    command = [sys.executable, "-m", "rls_tenancy.cli", "postgres"]

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ignore_sigint if sigint_ignored else None,  # noqa: PLW1509 - no threads started here
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            url = process.stdout.readline().strip()
            assert url.startswith("postgresql"), process.stderr.read()
            plain = database_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            hint = process.stderr.readline()
            assert hint.strip() == f"rls-tenancy: for psql and createdb: {plain}"  # what psql takes as it is
            with psycopg.connect(plain) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            process.send_signal(stop)
            assert process.wait(timeout=60) == 0
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(plain, connect_timeout=3)


# A process holding a throwaway cluster: it prints the cluster's data directory and URL, then waits.
_HOLDER = """
import sys, time
from rls_tenancy.testing.server import local_cluster
with local_cluster() as cluster:
    print(cluster._root, flush=True)
    print(cluster.url.set(drivername="postgresql").render_as_string(hide_password=False), flush=True)
    time.sleep(120)
"""


def test_a_process_ended_by_sigterm_removes_its_throwaway_cluster() -> None:
    """SIGTERM (a cancelled CI job) used to end the process at once, leaving the server running with its data."""
    if server.find_bindir() is None:
        pytest.fail(
            "this test needs local PostgreSQL binaries (initdb, postgres); `make test` installs nothing for them"
        )
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        root = Path(process.stdout.readline().strip())
        url = process.stdout.readline().strip()
        assert root.is_dir() and url.startswith("postgresql://"), process.stderr.read()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert not root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3)
