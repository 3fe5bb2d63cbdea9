"""Live reload: a running gateway applies its rewritten configuration file on SIGHUP or
`gateway reload`, in every worker; an invalid file changes nothing; a request in flight
finishes under the configuration it started with.

One gateway serves the whole module, its file rewritten between steps; each test uses access
keys and buckets of its own, so the tests hold in any order.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import (
    GATEWAY_ENV,
    READER_ACCESS_KEY,
    REPO,
    GatewayProcess,
    client,
    create_database,
    free_port,
    run_gateway,
    wait_for,
    write_config,
)
from tests.rawhttp import receive, request_head, sign
from tests.s3errors import error_of
from tests.test_cli import serving_workers

RELOADED = "configuration reloaded"
REFUSED = "configuration not reloaded"
# Long enough for an upload to stay open across a reload.
LIMITS = {"garbage_grace_seconds": 3600, "body_idle_timeout_seconds": 30}
READER = {
    "access_key": READER_ACCESS_KEY,
    "secret_key": "${GATEWAY_TEST_READER_SECRET}",
    "buckets": {"public-photos": "read"},
}


def credential(grant: str = "read-write") -> dict[str, object]:
    """A new credential with ``grant`` on every bucket."""
    return {
        "access_key": f"GWRELOAD{uuid.uuid4().hex[:12].upper()}",
        "secret_key": f"secret-{uuid.uuid4().hex}",
        "buckets": {"*": grant},
    }


def client_of(endpoint: str, found: dict[str, object]) -> object:
    return client(endpoint, str(found["access_key"]), str(found["secret_key"]))


@pytest.fixture(scope="module")
def gateway(tmp_root: Path, pg_server_dsn: str) -> Iterator[GatewayProcess]:
    dsn = create_database(pg_server_dsn)
    with run_gateway(tmp_root / "reload", dsn, {}, GATEWAY_ENV, limits=LIMITS) as process:
        yield process


def rewrite(gateway: GatewayProcess, **changes: object) -> None:
    """The gateway's file as at start, with ``changes`` (write_config keywords)."""
    changes.setdefault("limits", LIMITS)
    write_config(gateway.config_path, gateway.data_dir, gateway.port, gateway.dsn, **changes)


def logged(log: Path, text: str) -> int:
    return log.read_text().count(text)


def await_log(log: Path, text: str, before: int, count: int = 1) -> None:
    assert wait_for(lambda: logged(log, text) >= before + count, 30), log.read_text()[-3000:]


def reload_by_signal(gateway: GatewayProcess, outcome: str = RELOADED) -> None:
    assert gateway.process is not None and gateway.log_path is not None
    before = logged(gateway.log_path, outcome)
    gateway.process.send_signal(signal.SIGHUP)
    await_log(gateway.log_path, outcome, before)


def reload_by_command(gateway: GatewayProcess) -> None:
    assert gateway.process is not None and gateway.log_path is not None
    before = logged(gateway.log_path, RELOADED)
    done = gateway.command("reload")
    assert done.returncode == 0, done.stderr
    assert f"sent SIGHUP to the gateway (pid {gateway.process.pid})" in done.stdout
    await_log(gateway.log_path, RELOADED, before)


def refused_key(s3: object, bucket: str) -> tuple[int, str]:
    with pytest.raises(ClientError) as refused:
        s3.list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return error_of(refused)


@pytest.fixture
def bucket(gateway: GatewayProcess) -> str:
    name = f"reload-{uuid.uuid4().hex[:12]}"
    client(gateway.endpoint).create_bucket(Bucket=name)
    return name


def test_pid_file_names_the_serving_process(gateway: GatewayProcess) -> None:
    assert gateway.process is not None
    pid_file = gateway.data_dir / "gateway.pid"
    assert pid_file.read_text().strip() == str(gateway.process.pid)


def test_credential_added_works_at_once_and_revoked_stops_at_once(
    gateway: GatewayProcess, bucket: str
) -> None:
    added = credential()
    s3 = client_of(gateway.endpoint, added)
    assert refused_key(s3, bucket) == (403, "InvalidAccessKeyId")

    rewrite(gateway, credentials=[READER, added])
    reload_by_signal(gateway)
    s3.put_object(Bucket=bucket, Key="by-new-key", Body=b"new")  # type: ignore[attr-defined]
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1  # type: ignore[attr-defined]

    rewrite(gateway, credentials=[READER])
    reload_by_command(gateway)
    assert refused_key(s3, bucket) == (403, "InvalidAccessKeyId")
    # The root credential (from the environment) is never dropped by a reload.
    assert client(gateway.endpoint).list_objects_v2(Bucket=bucket)["KeyCount"] == 1


def test_grant_changes_apply_at_once(gateway: GatewayProcess, bucket: str) -> None:
    changing = credential("read")
    s3 = client_of(gateway.endpoint, changing)
    rewrite(gateway, credentials=[READER, changing])
    reload_by_signal(gateway)
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")  # type: ignore[attr-defined]
    assert error_of(refused) == (403, "AccessDenied")
    rewrite(gateway, credentials=[READER, {**changing, "buckets": {bucket: "read-write"}}])
    reload_by_signal(gateway)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "broken",
    [
        "credentials: [\n",
        "credentials:\n  - access_key: GWSHORT\n    secret_key: short\n",
        "buckets:\n  some-bucket:\n    profile: nowhere\n",
        "limits:\n  max_object_size: lots\n",
    ],
    ids=["yaml", "secret", "profile", "size"],
)
def test_an_invalid_file_changes_nothing(gateway: GatewayProcess, bucket: str, broken: str) -> None:
    kept = credential()
    rewrite(gateway, credentials=[READER, kept])
    reload_by_signal(gateway)
    gateway.config_path.write_text(broken)
    reload_by_signal(gateway, REFUSED)
    assert gateway.log_path is not None
    refusal = gateway.log_path.read_text().rpartition(REFUSED)[2].splitlines()[0]
    assert "the running one is kept" in refusal
    # The credential the broken file no longer has still works: nothing was applied.
    client_of(gateway.endpoint, kept).list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    # `gateway reload` checks the file first, and signals nothing.
    done = gateway.command("reload")
    assert done.returncode == 2
    assert "configuration error" in done.stderr and "sent SIGHUP" not in done.stdout


def test_buckets_declared_by_reload_exist_with_their_settings(gateway: GatewayProcess) -> None:
    declared = f"reload-declared-{uuid.uuid4().hex[:8]}"
    anonymous = f"{gateway.endpoint}/{declared}/page.txt"
    rewrite(gateway, buckets={declared: {"public_read": True}})
    reload_by_signal(gateway)
    root = client(gateway.endpoint)
    root.put_object(Bucket=declared, Key="page.txt", Body=b"hello")
    assert requests.get(anonymous, timeout=10).content == b"hello"

    rewrite(gateway, buckets={declared: {"public_read": False}})
    reload_by_command(gateway)
    assert requests.get(anonymous, timeout=10).status_code == 403


def test_settings_that_need_a_restart_are_named_and_the_rest_applied(
    gateway: GatewayProcess, bucket: str
) -> None:
    added = credential()
    rewrite(
        gateway,
        listen=f"127.0.0.1:{free_port()}",
        limits={**LIMITS, "max_connections": 100},
        credentials=[READER, added],
    )
    reload_by_signal(gateway)
    assert gateway.log_path is not None
    applied = gateway.log_path.read_text().rpartition(RELOADED)[2].splitlines()[0]
    # The rest of a JSON log line (the default format): the message's end, then '"}'.
    assert applied.removesuffix('"}').endswith(
        "needs a restart to change: listen, limits.max_connections"
    )
    # Still where it listened, with the rest of the file applied.
    client_of(gateway.endpoint, added).list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    rewrite(gateway)
    reload_by_signal(gateway)


def test_upload_in_flight_completes_under_the_credential_it_started_with(
    gateway: GatewayProcess, bucket: str
) -> None:
    """A PutObject whose body is still arriving when its access key is revoked completes:
    it was authorised when it began. The next request with that key is refused."""
    uploader = credential()
    rewrite(gateway, credentials=[READER, uploader])
    reload_by_signal(gateway)
    body = os.urandom(2 * 1024**2)
    url = f"{gateway.endpoint}/{bucket}/spanning"
    headers = sign(
        "PUT",
        url,
        "UNSIGNED-PAYLOAD",
        {"Content-Length": str(len(body))},
        secret_key=str(uploader["secret_key"]),
        access_key=str(uploader["access_key"]),
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(request_head("PUT", f"/{bucket}/spanning", headers) + body[: len(body) // 2])

        rewrite(gateway, credentials=[READER])
        reload_by_signal(gateway)
        assert refused_key(client_of(gateway.endpoint, uploader), bucket) == (
            403,
            "InvalidAccessKeyId",
        )

        sock.sendall(body[len(body) // 2 :])
        response = receive(sock)
    assert response.status == 200, response
    assert response.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    stored = client(gateway.endpoint).get_object(Bucket=bucket, Key="spanning")["Body"].read()
    assert stored == body


def test_reload_without_a_running_gateway_says_so(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    data_dir = tmp_path / "data"
    write_config(config, data_dir, free_port(), "postgresql://127.0.0.1:1/none")

    def reload() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "reload", "--config", str(config)],
            cwd=REPO,
            env={**os.environ, **GATEWAY_ENV},
            capture_output=True,
            text=True,
            timeout=60,
        )

    none = reload()
    assert none.returncode == 1
    assert "no gateway is running" in none.stderr
    # A pid file left by a gateway that was killed names a process that is gone.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    data_dir.mkdir()
    (data_dir / "gateway.pid").write_text(f"{gone.pid}\n")
    stale = reload()
    assert stale.returncode == 1
    assert "stale pid file" in stale.stderr


def test_every_worker_applies_a_reload(pg_server_dsn: str, tmp_path: Path) -> None:
    """--workers 2: the parent passes SIGHUP on, and each worker reloads; fresh connections,
    spread by the kernel over both, all see the new credential, then all see it revoked."""
    port = free_port()
    config = tmp_path / "gateway.yaml"
    data_dir = tmp_path / "data"
    dsn = create_database(pg_server_dsn)
    write_config(config, data_dir, port, dsn)
    log = tmp_path / "gateway.log"
    endpoint = f"http://127.0.0.1:{port}"
    with serving_workers(config, port, log, GATEWAY_ENV) as process:
        assert (data_dir / "gateway.pid").read_text().strip() == str(process.pid)
        bucket = f"reload-{uuid.uuid4().hex[:12]}"
        client(endpoint).create_bucket(Bucket=bucket)
        added = credential()

        write_config(config, data_dir, port, dsn, credentials=[added])
        before = logged(log, RELOADED)
        reloaded = subprocess.run(
            [sys.executable, "-m", "gateway", "reload", "--config", str(config)],
            cwd=REPO,
            env={**os.environ, **GATEWAY_ENV},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reloaded.returncode == 0, reloaded.stderr
        await_log(log, RELOADED, before, count=2)
        for _ in range(12):
            client_of(endpoint, added).list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]

        write_config(config, data_dir, port, dsn)
        before = logged(log, RELOADED)
        process.send_signal(signal.SIGHUP)
        await_log(log, RELOADED, before, count=2)
        for _ in range(12):
            assert refused_key(client_of(endpoint, added), bucket) == (403, "InvalidAccessKeyId")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert not (data_dir / "gateway.pid").exists()
        assert "Traceback" not in log.read_text()
