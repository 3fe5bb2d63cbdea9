"""An upstream that stops answering must not starve the rest of the gateway: while requests to
an upstream-backed bucket hang, a bucket on local storage served by the same process keeps
answering at its usual speed, although its Postgres pool has far fewer connections than there
are hanging requests. Once the upstream is back, every hanging request completes and the
gateway's records agree with the upstream bucket.

The upstream is a moto of the test's own, stopped with SIGSTOP (its socket still accepts, but
nothing answers) and resumed with SIGCONT. The gateway reaches it through a FaultyProxy, which
tells when each hanging request has reached its upstream call. A write that cannot commit on
the condition that nothing came in between (CopyObject, CompleteMultipartUpload, a PutObject
over an object another tool wrote) makes its one upstream call with the key locked only after
the write itself has landed, to confirm it is still in place; the proxy stalls those confirming
HEADs, moto still running, before moto is stopped for everything else. The calls made with a
key locked are given longer than the test lasts, so they really hold their connections: only
the share of the pool they may take keeps the local bucket answering.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.conftest import (
    UPSTREAM,
    UPSTREAM_ENV,
    GatewayProcess,
    MotoServer,
    S3Client,
    client,
    create_database,
    db_fetch,
    free_port,
    run_gateway,
    upstream_key,
    upstream_storage,
    wait_for,
)
from tests.faultproxy import PASS, STALL, FaultyProxy
from tests.s3errors import error_of
from tests.test_upstream import listing, read_body

# upstream_storage's local profile, and the buckets declared on each profile.
LOCAL_PROFILE = "default"
ON_DISK = "on-disk"
BACKED = "upstream-backed"
# No more connections than there are hanging requests of any one kind below.
POOL_MAX = 4
# What a local request may take: far above its usual few milliseconds, far below a hang (the
# upstream profile waits READ_TIMEOUT for each of its attempts).
ANSWER_WITHIN = 5.0
READ_TIMEOUT = 30
ATTEMPTS = 4
# How long the hanging clients wait, and how long requests get to reach the upstream.
HANG_CLIENT_TIMEOUT = 30
REACH_WITHIN = 10.0
# Requests of each kind that holds a connection while it waits for the upstream (adoption,
# delete, the confirmation of a write, that of a completed upload): any one kind left doing so
# without limit would take the whole pool.
EACH = POOL_MAX
# The upstream calls made with a key locked, and how many connections may wait on them at once
# (half the pool); the other such requests wait for their turn holding none.
LOCKED_CALLS = frozenset({"HEAD", "DELETE"})
LOCKED_SHARE = POOL_MAX // 2

T = TypeVar("T")


@dataclass
class Stack:
    moto: MotoServer
    proxy: FaultyProxy
    gateway: GatewayProcess

    def upstream_path(self, key: str) -> str:
        """The path of object ``key`` of BACKED in the requests the proxy sees."""
        return f"/{self.moto.bucket}/{upstream_key(BACKED, key)}"


@pytest.fixture
def stack(tmp_path: Path, pg_server_dsn: str) -> Iterator[Stack]:
    """moto, the proxy in front of it and a gateway with a small pool, all of their own."""
    moto = MotoServer(free_port(), tmp_path / "moto.log")
    proxy = FaultyProxy(moto.port)
    try:
        moto.start()
        proxy.start()
        storage = upstream_storage(moto)
        profile = storage["storage_profiles"][UPSTREAM]  # type: ignore[index]
        # Silence is waited out for long: the requests really hang.
        profile.update(
            endpoint_url=proxy.endpoint,
            read_timeout_seconds=READ_TIMEOUT,
            max_attempts=ATTEMPTS,
            locked_call_timeout_seconds=READ_TIMEOUT,
        )
        dsn = create_database(pg_server_dsn)
        database = {
            "url": dsn,
            "pool_min_size": 1,
            "pool_max_size": POOL_MAX,
            "connect_timeout_seconds": 2,
            # A starved pool answers 503 within ANSWER_WITHIN rather than leaving the client
            # to time out.
            "acquire_timeout_seconds": 3,
        }
        buckets = {ON_DISK: {"profile": LOCAL_PROFILE}, BACKED: {"profile": UPSTREAM}}
        with run_gateway(
            tmp_path / "gateway",
            dsn,
            storage,
            UPSTREAM_ENV,
            database=database,
            buckets=buckets,
        ) as gateway:
            yield Stack(moto, proxy, gateway)
    finally:
        proxy.stop()
        moto.stop()


@dataclass
class Hanging:
    """Requests to BACKED, each from a thread of its own, with the upstream call (method,
    path) each must reach before it can hang there."""

    proxy: FaultyProxy
    reaches: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Name -> (HTTP status or 0 when none came, error code(s) or exception name).
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)

    def send(self, name: str, reaches: tuple[str, str], call: Callable[[], object]) -> None:
        self.reaches[name] = reaches
        thread = threading.Thread(target=self._run, args=(name, call), daemon=True)
        thread.start()
        self.threads.append(thread)

    def reached(self) -> set[str]:
        seen = {(entry.method, entry.target.split("?")[0]) for entry in list(self.proxy.seen)}
        return {name for name, call in self.reaches.items() if call in seen}

    def locked(self, names: set[str]) -> set[str]:
        """Those of ``names`` whose upstream call is made with the key locked."""
        return {name for name in names if self.reaches[name][0] in LOCKED_CALLS}

    def settled(self) -> bool:
        """Every request sent has reached its upstream call or been answered, except those
        waiting their turn for a call made with the key locked; LOCKED_SHARE of those (or all,
        if fewer) have reached theirs."""
        done = self.reached() | set(self.answers)
        waiting = set(self.reaches) - done
        locked_done = self.locked(done)
        share = min(LOCKED_SHARE, len(locked_done) + len(waiting))
        return waiting == self.locked(waiting) and len(locked_done) >= share

    def wait_reached(self) -> None:
        """Until settled; one that never settles is reported after the local requests."""
        wait_for(self.settled, REACH_WITHIN)

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self.threads)

    def _run(self, name: str, call: Callable[[], object]) -> None:
        try:
            result = call()
            self.answers[name] = (200, result if isinstance(result, str) else "")
        except ClientError as error:
            self.answers[name] = error_of(error)
        except BotoCoreError as error:
            self.answers[name] = (0, type(error).__name__)


def delete_keys(s3: S3Client, keys: list[str]) -> Callable[[], str]:
    """DeleteObjects of ``keys`` in BACKED; its answer is the codes of the keys it refused."""

    def call() -> str:
        result = s3.delete_objects(
            Bucket=BACKED, Delete={"Objects": [{"Key": key} for key in keys]}
        )
        return " ".join(error["Code"] for error in result.get("Errors", []))

    return call


def complete(s3: S3Client, key: str, upload_id: str, etag: str) -> Callable[[], object]:
    return functools.partial(
        s3.complete_multipart_upload,
        Bucket=BACKED,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )


def pool_use(dsn: str) -> str:
    """What the gateway's connections are doing, for a failure's message."""
    row = db_fetch(
        dsn,
        "SELECT count(*) AS open,"
        " count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS in_transaction,"
        " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        "  AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
        " AS locks"
        " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )[0]
    return (
        f"the gateway has {row['open']} of its {POOL_MAX} database connections open,"
        f" {row['in_transaction']} idle in a transaction, {row['locks']} key locks held"
    )


def promptly(operation: str, call: Callable[[], T], dsn: str) -> T:
    """``call``'s result if it came within ANSWER_WITHIN; else the test fails saying how."""
    started = time.monotonic()
    try:
        result = call()
    except (ClientError, BotoCoreError) as error:
        what = error_of(error) if isinstance(error, ClientError) else type(error).__name__
        seconds = time.monotonic() - started
        pytest.fail(f"{operation} on {ON_DISK}: {what} after {seconds:.1f} s; {pool_use(dsn)}")
    seconds = time.monotonic() - started
    assert seconds < ANSWER_WITHIN, f"{operation} on {ON_DISK} took {seconds:.1f} s"
    return result


def missing(s3: S3Client, key: str) -> int:
    """The status of a HeadObject expected to find nothing."""
    try:
        s3.head_object(Bucket=ON_DISK, Key=key)
    except ClientError as error:
        return error_of(error)[0]
    return 200


def use_local_bucket(s3: S3Client, dsn: str) -> None:
    """Every kind of request on ON_DISK, each answered correctly within ANSWER_WITHIN."""
    small, large = b"kept in its row", os.urandom(64 * 1024)
    promptly("PutObject", lambda: s3.put_object(Bucket=ON_DISK, Key="small", Body=small), dsn)
    promptly("PutObject", lambda: s3.put_object(Bucket=ON_DISK, Key="large", Body=large), dsn)
    assert promptly("GetObject", lambda: read_body(s3, Bucket=ON_DISK, Key="small"), dsn) == small
    assert promptly("GetObject", lambda: read_body(s3, Bucket=ON_DISK, Key="large"), dsn) == large
    head = promptly("HeadObject", lambda: s3.head_object(Bucket=ON_DISK, Key="large"), dsn)
    assert head["ContentLength"] == len(large)
    listed = promptly("ListObjectsV2", lambda: s3.list_objects_v2(Bucket=ON_DISK), dsn)
    assert [entry["Key"] for entry in listed["Contents"]] == ["large", "small"]
    promptly("DeleteObject", lambda: s3.delete_object(Bucket=ON_DISK, Key="small"), dsn)
    assert promptly("HeadObject of a deleted key", lambda: missing(s3, "small"), dsn) == 404


@dataclass
class Objects:
    """What the hanging requests work on, and what BACKED must hold in the end."""

    # Key -> bytes of every object BACKED must hold once the upstream is back.
    bodies: dict[str, bytes] = field(default_factory=dict)
    # Keys deleted while the upstream hangs.
    doomed: list[str] = field(default_factory=list)
    # Key -> (upload id, ETag of its one part) of the uploads completed while it hangs.
    uploads: dict[str, tuple[str, str]] = field(default_factory=dict)


def prepare(stack: Stack, s3: S3Client) -> Objects:
    """Recorded objects, objects the upstream holds that the gateway has never seen (a GET or
    HEAD adopts them), objects to delete, uploads with their part."""
    made = Objects()
    for index in range(2):
        key = f"recorded/{index}"
        made.bodies[key] = os.urandom(3000 + index)
        s3.put_object(Bucket=BACKED, Key=key, Body=made.bodies[key])
    direct = stack.moto.client()
    for index in range(EACH):
        key = f"unrecorded/{index}"
        made.bodies[key] = os.urandom(2000 + index)
        direct.put_object(
            Bucket=stack.moto.bucket, Key=upstream_key(BACKED, key), Body=made.bodies[key]
        )
    made.doomed = [f"doomed/{index}" for index in range(EACH + 2)]
    for key in made.doomed:
        s3.put_object(Bucket=BACKED, Key=key, Body=b"deleted while the upstream hangs")
    for key in [*(f"confirm/assembled-{index}" for index in range(EACH)), "hung/assembled"]:
        made.bodies[key] = os.urandom(1000)
        upload_id = s3.create_multipart_upload(Bucket=BACKED, Key=key)["UploadId"]
        part = s3.upload_part(
            Bucket=BACKED, Key=key, UploadId=upload_id, PartNumber=1, Body=made.bodies[key]
        )
        made.uploads[key] = (upload_id, part["ETag"])
    return made


def stall_confirmations(stack: Stack, hanging: Hanging, s3: S3Client, made: Objects) -> None:
    """Writes whose bytes land upstream, left waiting at the HEAD that confirms them."""
    confirming = stack.upstream_path("confirm/")
    stack.proxy.rule = lambda method, target: (
        STALL if method == "HEAD" and target.startswith(confirming) else PASS
    )
    direct = stack.moto.client()
    for index in range(EACH // 2):
        key = f"confirm/put-{index}"
        # Written by another tool first: the row does not describe what the upstream holds,
        # so the PutObject is confirmed.
        direct.put_object(
            Bucket=stack.moto.bucket, Key=upstream_key(BACKED, key), Body=b"another tool's"
        )
        made.bodies[key] = os.urandom(1500 + index)
        call = functools.partial(s3.put_object, Bucket=BACKED, Key=key, Body=made.bodies[key])
        hanging.send(f"PutObject {key}", ("HEAD", stack.upstream_path(key)), call)
        key = f"confirm/copy-{index}"
        made.bodies[key] = made.bodies["recorded/0"]
        call = functools.partial(
            s3.copy_object, Bucket=BACKED, Key=key, CopySource=f"{BACKED}/recorded/0"
        )
        hanging.send(f"CopyObject {key}", ("HEAD", stack.upstream_path(key)), call)
    for key in made.uploads:
        if key.startswith("confirm/"):
            call = complete(s3, key, *made.uploads[key])
            hanging.send(f"CompleteMultipartUpload {key}", ("HEAD", stack.upstream_path(key)), call)


def hang_on_stopped_upstream(stack: Stack, hanging: Hanging, s3: S3Client, made: Objects) -> None:
    """Every other kind of request that waits for the (stopped) upstream."""
    # Reads of keys without a row, which adopt what the upstream holds.
    for index in range(EACH):
        key = f"unrecorded/{index}"
        if index % 2:
            call = functools.partial(read_body, s3, Bucket=BACKED, Key=key)
            hanging.send(f"GetObject {key}", ("HEAD", stack.upstream_path(key)), call)
        else:
            call = functools.partial(s3.head_object, Bucket=BACKED, Key=key)
            hanging.send(f"HeadObject {key}", ("HEAD", stack.upstream_path(key)), call)
    # Deletes, of one key each or of two in one request.
    for key in made.doomed[: EACH // 2]:
        call = functools.partial(s3.delete_object, Bucket=BACKED, Key=key)
        hanging.send(f"DeleteObject {key}", ("DELETE", stack.upstream_path(key)), call)
    for index in range(EACH // 2, len(made.doomed), 2):
        keys = made.doomed[index : index + 2]
        call = delete_keys(s3, keys)
        hanging.send(f"DeleteObjects {keys}", ("DELETE", stack.upstream_path(keys[0])), call)
    # Those that hold no connection while they wait for the upstream today.
    for index in range(2):
        key = f"recorded/{index}"
        call = functools.partial(read_body, s3, Bucket=BACKED, Key=key)
        hanging.send(f"GetObject {key}", ("GET", stack.upstream_path(key)), call)
    made.bodies["hung/put"] = os.urandom(1200)
    call = functools.partial(
        s3.put_object, Bucket=BACKED, Key="hung/put", Body=made.bodies["hung/put"]
    )
    hanging.send("PutObject hung/put", ("PUT", stack.upstream_path("hung/put")), call)
    made.bodies["hung/copy"] = made.bodies["recorded/1"]
    call = functools.partial(
        s3.copy_object, Bucket=BACKED, Key="hung/copy", CopySource=f"{BACKED}/recorded/1"
    )
    hanging.send("CopyObject hung/copy", ("PUT", stack.upstream_path("hung/copy")), call)
    call = complete(s3, "hung/assembled", *made.uploads["hung/assembled"])
    reaches = ("POST", stack.upstream_path("hung/assembled"))
    hanging.send("CompleteMultipartUpload hung/assembled", reaches, call)


def assert_agrees_with_upstream(stack: Stack, s3: S3Client, made: Objects) -> None:
    """The gateway and the upstream hold the same objects of BACKED: nothing deleted comes
    back, every write is there once, every adopted key has its row, no upload is left."""
    direct = stack.moto.client()
    for key, body in made.bodies.items():
        assert read_body(s3, Bucket=BACKED, Key=key) == body, key
        upstream = upstream_key(BACKED, key)
        assert read_body(direct, Bucket=stack.moto.bucket, Key=upstream) == body, key
    for key in made.doomed:
        with pytest.raises(ClientError) as excinfo:
            s3.head_object(Bucket=BACKED, Key=key)
        assert error_of(excinfo) == (404, "404"), key
    sizes = {key: len(body) for key, body in made.bodies.items()}
    assert {key: size for key, size, _ in listing(s3, BACKED)} == sizes
    listed = direct.list_objects_v2(Bucket=stack.moto.bucket)["Contents"]
    assert {entry["Key"]: entry["Size"] for entry in listed} == {
        upstream_key(BACKED, key): size for key, size in sizes.items()
    }
    rows = db_fetch(stack.gateway.dsn, "SELECT key FROM objects WHERE bucket = $1", BACKED)
    assert {row["key"] for row in rows} == set(made.bodies)
    assert not direct.list_multipart_uploads(Bucket=stack.moto.bucket).get("Uploads")
    assert not s3.list_multipart_uploads(Bucket=BACKED).get("Uploads")


def test_a_hung_upstream_leaves_local_buckets_answering(stack: Stack) -> None:
    gateway, moto, proxy = stack.gateway, stack.moto, stack.proxy
    assert moto.process is not None and gateway.log_path is not None
    s3 = client(gateway.endpoint)
    made = prepare(stack, s3)
    offset = gateway.log_path.stat().st_size
    # One attempt each, and room for every hanging request at once.
    patient = client(
        gateway.endpoint,
        retries={"total_max_attempts": 1},
        read_timeout=HANG_CLIENT_TIMEOUT,
        max_pool_connections=64,
    )
    local = client(gateway.endpoint, retries={"total_max_attempts": 1}, read_timeout=ANSWER_WITHIN)

    hanging = Hanging(proxy)
    try:
        stall_confirmations(stack, hanging, patient, made)
        hanging.wait_reached()
        os.kill(moto.process.pid, signal.SIGSTOP)
        hang_on_stopped_upstream(stack, hanging, patient, made)
        hanging.wait_reached()
        settled = hanging.settled()
        use_local_bucket(local, gateway.dsn)
        early = dict(hanging.answers)
    finally:
        os.kill(moto.process.pid, signal.SIGCONT)
        proxy.rule = lambda method, target: PASS
        proxy.release()
        finished = hanging.join(HANG_CLIENT_TIMEOUT + 10)

    # The local requests were answered while every upstream request hung.
    assert not early, f"answered while the upstream was stopped: {early}"
    assert settled, f"never reached: {set(hanging.reaches) - hanging.reached()}"
    # And once the upstream is back, every one of those completes.
    assert finished, "a request still hangs with the upstream back"
    refused = {name: answer for name, answer in hanging.answers.items() if answer != (200, "")}
    assert not refused, f"refused once the upstream was back: {refused}"
    made.bodies["after"] = b"written after the upstream came back"
    s3.put_object(Bucket=BACKED, Key="after", Body=made.bodies["after"])
    assert_agrees_with_upstream(stack, s3, made)
    assert "0 idle in a transaction, 0 key locks" in pool_use(gateway.dsn)
    use_local_bucket(local, gateway.dsn)
    logged = gateway.log_path.read_bytes()[offset:].decode(errors="replace")
    assert "Traceback" not in logged, logged[-3000:]
