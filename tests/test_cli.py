"""`gateway serve --workers N` and `gateway migrate`, run as an operator runs them."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    GATEWAY_ENV,
    REPO,
    GatewayProcess,
    _spawn,
    _terminate,
    _wait_until,
    client,
    create_database,
    db_fetch,
    free_port,
    wait_for,
    write_config,
)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (in parentheses) may hold spaces; the parent pid follows it.
    return int(stat.rpartition(")")[2].split()[1])


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``: its children, theirs, and so on."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (parent := _parent_of(int(entry))) is not None:
            parents[int(entry)] = parent
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def gateway_workers(pid: int) -> list[int]:
    """The gateway processes started by ``pid`` (multiprocessing's spawned children)."""
    workers = []
    for child in descendants(pid):
        if _parent_of(child) != pid:
            continue
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            workers.append(child)
    return workers


def listening_sockets(port: int) -> int:
    """Sockets listening on 127.0.0.1:``port`` (one per process sharing it by SO_REUSEPORT)."""
    local = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":
            count += 1
    return count


@contextlib.contextmanager
def serving_workers(
    config: Path, port: int, log: Path, env: dict[str, str], workers: int = 2
) -> Iterator[subprocess.Popen[bytes]]:
    """`gateway serve --config CONFIG --workers N`, once every worker listens and it answers
    its health check. On leaving it is stopped if still running, and every process that was
    below it is killed."""
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    process = _spawn([*command, "--workers", str(workers)], log, env)
    health = f"http://127.0.0.1:{port}/_gateway/health"
    try:
        _wait_until(
            process,
            log,
            lambda: listening_sockets(port) == workers and requests.get(health, timeout=2).ok,
            90,
        )
        yield process
    finally:
        # Found before the parent goes: its orphans would be init's children, not its.
        below = descendants(process.pid)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in below:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workers_gateway(
    pg_server_dsn: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`gateway serve --workers 2` on a database of its own; (process, endpoint, log)."""
    port = free_port()
    config = tmp_path / "gateway.yaml"
    write_config(config, tmp_path / "data", port, create_database(pg_server_dsn))
    log = tmp_path / "gateway.log"
    with serving_workers(config, port, log, GATEWAY_ENV) as process:
        yield process, f"http://127.0.0.1:{port}", log


def test_serve_with_workers_shares_the_port_and_stops_cleanly(workers_gateway) -> None:
    process, endpoint, log = workers_gateway
    workers = gateway_workers(process.pid)
    assert len(workers) == 2
    port = int(endpoint.rpartition(":")[2])
    assert listening_sockets(port) == 2
    everything = descendants(process.pid)
    s3 = client(endpoint)
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    # Fresh connections, spread by the kernel over both processes: each serves the same
    # buckets and objects, as they share one database.
    for index in range(20):
        body = f"object {index}".encode()
        fresh = client(endpoint)
        fresh.put_object(Bucket=bucket, Key=f"k{index}", Body=body)
        assert client(endpoint).get_object(Bucket=bucket, Key=f"k{index}")["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=bucket)["KeyCount"]
    assert listed == 20

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    # Nothing is left behind: the workers, and the render processes they started.
    assert wait_for(lambda: not [pid for pid in everything if alive(pid)], 30)
    assert listening_sockets(port) == 0
    assert "Traceback" not in log.read_text()


def test_serve_with_workers_stops_all_when_one_dies(workers_gateway) -> None:
    """A worker ending on its own degrades the service: the others are stopped and the
    gateway exits non-zero, so that a supervisor restarts it whole."""
    process, _, _ = workers_gateway
    everything = descendants(process.pid)
    first, second = gateway_workers(process.pid)
    os.kill(first, signal.SIGKILL)
    assert process.wait(timeout=60) != 0
    assert wait_for(lambda: not alive(second), 30)
    assert wait_for(lambda: not [pid for pid in everything if alive(pid)], 30)


def test_serve_with_workers_stops_when_its_parent_is_killed(workers_gateway) -> None:
    """SIGKILL leaves the parent no chance to stop its workers: they stop by themselves, so no
    orphan keeps serving the port (and a new gateway can listen on it)."""
    process, endpoint, _ = workers_gateway
    everything = descendants(process.pid)
    process.kill()
    process.wait()
    try:
        assert wait_for(lambda: not [pid for pid in everything if alive(pid)], 30)
        assert listening_sockets(int(endpoint.rpartition(":")[2])) == 0
    finally:
        # The fixture finds no process below a parent that is gone.
        for pid in everything:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def migrate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "migrate", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, **GATEWAY_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_applies_the_schema_once_and_keeps_data(pg_server_dsn: str, tmp_path: Path) -> None:
    dsn = create_database(pg_server_dsn)
    config = tmp_path / "gateway.yaml"
    write_config(config, tmp_path / "data", free_port(), dsn)
    schema = (REPO / "schema.sql").read_text()
    version = re.search(r"^-- schema-version: (\d+)$", schema, re.MULTILINE)
    assert version is not None
    tables = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", schema))

    first = migrate(config)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"schema version {version.group(1)}"
    rows = db_fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables <= {row["tablename"] for row in rows}
    recorded = db_fetch(dsn, "SELECT max(version) AS version FROM schema_version")
    assert recorded[0]["version"] == int(version.group(1))

    db_fetch(dsn, "INSERT INTO buckets (name, profile, owner) VALUES ('kept', 'default', 'test')")
    again = migrate(config)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == first.stdout.strip()
    assert db_fetch(dsn, "SELECT name FROM buckets WHERE name = 'kept'")


def test_version() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"gateway {importlib.metadata.version('gateway')}"


def test_startup_line_counts_workers(local_gateway: GatewayProcess) -> None:
    assert local_gateway.log_path is not None
    assert "(1 worker)" in local_gateway.log_path.read_text()


def test_a_second_gateway_on_a_taken_address_refuses_to_start(
    local_gateway: GatewayProcess, tmp_path: Path
) -> None:
    second = local_gateway.sibling(tmp_path / "second.yaml")
    config = second.config_path.read_text().replace(
        f"127.0.0.1:{second.port}", f"127.0.0.1:{local_gateway.port}"
    )
    second.config_path.write_text(config)
    for workers in ("1", "2"):
        started = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(second.config_path)],
            cwd=REPO,
            env={**os.environ, **local_gateway.env, "GATEWAY_WORKERS": workers},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 1
        assert started.stderr.strip() == (
            f"gateway: cannot listen on 127.0.0.1:{local_gateway.port}: Address already in use"
        )
        assert "listening" not in started.stdout


def test_serve_makes_a_missing_data_dir_for_its_embedded_postgres(tmp_path: Path) -> None:
    data = tmp_path / "not" / "yet" / "data"
    port = free_port()
    env = {
        **GATEWAY_ENV,
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_DATABASE_URL": "",
        "GATEWAY_CONFIG": "",
    }
    log = tmp_path / "gateway.log"
    process = _spawn([sys.executable, "-m", "gateway", "serve"], log, env)
    try:
        health = f"http://127.0.0.1:{port}/_gateway/health"
        _wait_until(process, log, lambda: requests.get(health, timeout=2).ok, 180)
        assert (data / "postgres").is_dir()
    finally:
        _terminate(process)
    # Stopped with the gateway, not left behind.
    assert wait_for(lambda: not (data / "postgres" / "postmaster.pid").exists(), 30)


def postmasters(pgdata: Path) -> list[int]:
    """The running Postgres servers of ``pgdata`` (their command line names it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(pgdata).encode() in command and alive(int(entry)):
            found.append(int(entry))
    return found


def test_embedded_postgres_left_by_a_killed_gateway_stops_with_the_next(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pgdata = data / "postgres"
    port = free_port()
    env = {
        **GATEWAY_ENV,
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_DATABASE_URL": "",
        "GATEWAY_CONFIG": "",
    }
    log = tmp_path / "gateway.log"
    health = f"http://127.0.0.1:{port}/_gateway/health"
    command = [sys.executable, "-m", "gateway", "serve"]
    killed = _spawn(command, log, env)
    try:
        _wait_until(killed, log, lambda: requests.get(health, timeout=2).ok, 180)
    finally:
        killed.kill()
        killed.wait()
    # The unclean exit leaves its Postgres running: the next gateway adopts it...
    assert postmasters(pgdata)
    restarted = _spawn([*command, "--workers", "2"], log, env)
    try:
        _wait_until(restarted, log, lambda: requests.get(health, timeout=2).ok, 180)
        # ...and a command run beside it on the same data dir leaves it to the gateway.
        migrated = subprocess.run(
            [sys.executable, "-m", "gateway", "migrate"],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrated.returncode == 0, migrated.stderr
        assert requests.get(health, timeout=5).ok
        running = (pgdata / "postmaster.pid").read_text()
    finally:
        _terminate(restarted)
    assert restarted.returncode == 0
    # ...and stops it when it stops.
    assert wait_for(lambda: not postmasters(pgdata), 30), postmasters(pgdata)

    # A container killed with its Postgres leaves postmaster.pid behind, and in the next
    # container that pid may be another live process: not a server to join, nor to stop.
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{running.split(chr(10), 1)[1]}")
    after_crash = _spawn(command, log, env)
    try:
        _wait_until(after_crash, log, lambda: requests.get(health, timeout=2).ok, 180)
    finally:
        _terminate(after_crash)
    assert after_crash.returncode == 0
    assert wait_for(lambda: not postmasters(pgdata), 30), postmasters(pgdata)
