"""Object keys that look like paths, escapes or garbage are plain keys, and never touch the disk.

Blobs are named by generated storage keys, so no object key can name a file; these tests hold
the gateway to that: every key round-trips exactly through boto3 (put, head, get, list, copy,
delete), and nothing outside the gateway's data directory changes while they run.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from gateway.config import LimitsConfig
from tests.conftest import (
    GATEWAY_ENV,
    UPSTREAM_BUCKET,
    UPSTREAM_VARIANTS_PREFIX,
    GatewayProcess,
    OwnUpstream,
    client,
    create_database,
    free_port,
    longest_key,
    own_upstream_gateway,
    upstream_key,
    write_config,
)

INLINE_MAX = LimitsConfig().inline_max_size

FOUR_BYTE = "\U0001f600"  # 😀, 4 bytes of UTF-8

HOSTILE_KEYS: dict[str, str] = {
    "dotdot": "../../x",
    "etc-passwd": "../../../etc/passwd",
    "dotdot-only": "..",
    "dot-only": ".",
    "dot-slash": "./x",
    "mid-dotdot": "a/../../b",
    "leading-slash": "/leading",
    "only-slashes": "//",
    "double-slash": "a//b",
    "trailing-slash": "dir/",
    "encoded-dotdot": "%2e%2e/x",
    "encoded-slash": "a%2Fb",
    "encoded-nul": "%00",
    "double-encoded": "%252e%252e",
    "backslash-dotdot": "..\\..\\x",
    "backslash": "a\\b",
    "windows-drive": "C:\\Windows\\win.ini",
    "control-chars": "ctl\x01\x1f",
    "control-only": "\x01",
    "del-char": "del\x7f",
    "newline": "line\nbreak",
    "tab-cr": "tab\there\r",
    "space-only": " ",
    "query-like": "?versionId=1&uploads",
    "fragment-like": "#frag",
    "plus-space": "a+b c",
    "xml-like": "<Key>&amp;</Key>",
    "nfc": "caf\u00e9",
    "nfd": "cafe\u0301",
    "bom": "\ufeffbom",
    "max-ascii": "k" * 1024,
    "max-4-byte": FOUR_BYTE * 256,
    "max-mixed": "é" * 511 + "ab",
}

# Files where the hostile keys would land if they were resolved as paths relative to the blob
# shard directory, the data directory or its parent; they must never change.
CANARIES = ["x", "b", "leading", "etc/passwd", "data/x", "data/etc/passwd", "C:\\Windows\\win.ini"]

# XML 1.0 cannot carry these even as character references, so DeleteObjects (an XML request)
# cannot name them; they are deleted one by one instead.
XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class Jail:
    """A gateway whose data directory sits in a directory the tests watch, among canaries."""

    process: GatewayProcess
    root: Path

    @property
    def data_dir(self) -> Path:
        return self.process.data_dir


def snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[str, int, int]]:
    """Every entry under root (links not followed), except those under a skipped path."""
    found = {}
    for path in root.rglob("*"):
        if any(path == s or s in path.parents for s in skip):
            continue
        info = path.lstat()
        kind = "dir" if path.is_dir() else "link" if path.is_symlink() else "file"
        found[path.relative_to(root).as_posix()] = (kind, info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def jail(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jail]:
    root = tmp_path_factory.mktemp("jail")
    for canary in CANARIES:
        (root / canary).parent.mkdir(parents=True, exist_ok=True)
        (root / canary).write_text("canary\n")
    port = free_port()
    config = tmp_path_factory.mktemp("jail-config") / "gateway.yaml"
    write_config(config, root / "data", port, create_database(pg_server_dsn))
    # Created up front, so the first blob does not change the data directory's own mtime.
    (root / "data" / "blobs").mkdir(parents=True)
    process = GatewayProcess(config, root / "data", port, env=GATEWAY_ENV)
    process.start()
    yield Jail(process, root)
    process.stop()


@pytest.fixture
def outside(jail: Jail) -> Iterator[None]:
    """Fails the test if anything but blob files changed in the watched directory."""
    assert jail.process.log_path is not None
    blobs = jail.data_dir / "blobs"
    # The metrics files of the gateway's processes change as it serves.
    skip = {blobs, jail.data_dir / "metrics", jail.process.log_path}
    before = snapshot(jail.root, skip)
    yield
    assert snapshot(jail.root, skip) == before
    for path in blobs.rglob("*"):
        relative = path.relative_to(blobs).as_posix()
        # Directories and files named by storage key only; nothing an object key could name.
        assert re.fullmatch(r"[0-9a-f]{2}|([0-9a-f]{2})/\1[0-9a-f]{30}(\.tmp)?", relative), relative


@pytest.fixture(scope="module")
def s3(jail: Jail):
    return client(jail.process.endpoint)


@pytest.fixture
def bucket(s3) -> str:
    name = f"hostile-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def body_for(key: str) -> bytes:
    """A body above the inline size, so that every write makes a blob (or, upstream, an
    object): a key that could name a file gets its chance to."""
    head = b"body of " + key.encode("utf-8") + b"\n" + hashlib.sha256(key.encode()).digest()
    return head + b"." * (INLINE_MAX + 100)


def blob_files(data_dir: Path) -> set[Path]:
    return {path for path in (data_dir / "blobs").rglob("*") if path.is_file()}


def all_keys_v2(s3, bucket: str, **kwargs: object) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    prefixes: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, **kwargs):
        keys += [entry["Key"] for entry in page.get("Contents", [])]
        prefixes += [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
    return keys, prefixes


def all_keys_v1(s3, bucket: str, **kwargs: object) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, **kwargs):
        keys += [entry["Key"] for entry in page.get("Contents", [])]
    return keys


def utf8_order(keys: object) -> list[str]:
    return sorted(keys, key=lambda key: key.encode("utf-8"))  # type: ignore[arg-type]


def test_key_lengths_are_bytes() -> None:
    assert len(HOSTILE_KEYS["max-ascii"].encode()) == 1024
    assert len(HOSTILE_KEYS["max-4-byte"].encode()) == 1024
    assert len(HOSTILE_KEYS["max-mixed"].encode()) == 1024


@pytest.mark.parametrize("key", HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_round_trip(s3, bucket: str, jail: Jail, outside: None, key: str) -> None:
    body = body_for(key)
    before = blob_files(jail.data_dir)
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-hostile")
    # The write made a blob, under a generated name (checked by `outside`).
    assert len(blob_files(jail.data_dir) - before) == 1

    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(body)
    assert head["ContentType"] == "application/x-hostile"
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body

    # Listed as exactly itself, by prefix and in full, in both listing versions.
    assert all_keys_v2(s3, bucket, Prefix=key) == ([key], [])
    assert all_keys_v2(s3, bucket) == ([key], [])
    assert all_keys_v1(s3, bucket, Prefix=key) == [key]

    # A copy onto itself parses the key back out of x-amz-copy-source.
    s3.copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key},
        MetadataDirective="REPLACE",
        Metadata={"copied": "yes"},
    )
    assert s3.head_object(Bucket=bucket, Key=key)["Metadata"] == {"copied": "yes"}
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body

    s3.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key=key)
    assert excinfo.value.response["Error"]["Code"] == "NoSuchKey"
    assert all_keys_v2(s3, bucket) == ([], [])


def test_all_keys_together(s3, bucket: str, outside: None) -> None:
    keys = list(HOSTILE_KEYS.values())
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=body_for(key))
    # Near-miss keys must stay distinct: no normalisation of dots, slashes or Unicode.
    assert len({key.encode() for key in keys}) == len(keys)

    expected = utf8_order(keys)
    # Small pages put hostile keys into continuation tokens and markers.
    assert all_keys_v2(s3, bucket, PaginationConfig={"PageSize": 3}) == (expected, [])
    assert all_keys_v1(s3, bucket, PaginationConfig={"PageSize": 3}) == expected
    after = HOSTILE_KEYS["dotdot"]
    listed, _ = all_keys_v2(s3, bucket, StartAfter=after)
    assert listed == [key for key in expected if key.encode() > after.encode()]

    contents, prefixes = all_keys_v2(s3, bucket, Delimiter="/")
    assert contents == [key for key in expected if "/" not in key]
    assert prefixes == utf8_order({key[: key.index("/") + 1] for key in keys if "/" in key})
    contents, prefixes = all_keys_v2(s3, bucket, Prefix="../", Delimiter="/")
    assert (contents, prefixes) == ([], ["../../"])

    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body_for(key)

    deletable = [key for key in keys if not XML_UNSAFE.search(key)]
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": key} for key in deletable]}
    )
    assert utf8_order(entry["Key"] for entry in result["Deleted"]) == utf8_order(deletable)
    assert not result.get("Errors")
    for key in keys:
        if XML_UNSAFE.search(key):
            s3.delete_object(Bucket=bucket, Key=key)
    assert all_keys_v2(s3, bucket) == ([], [])


@pytest.mark.parametrize(
    "key",
    ["k" * 1025, FOUR_BYTE * 256 + "a", "é" * 511 + "abc", "a" * 1023 + "é"],
    ids=["ascii-1025", "4-byte-1025", "mixed-1025", "split-char-1025"],
)
def test_key_too_long(s3, bucket: str, outside: None, key: str) -> None:
    assert len(key.encode()) == 1025
    for call in (
        lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"too long"),
        lambda: s3.get_object(Bucket=bucket, Key=key),
        lambda: s3.head_object(Bucket=bucket, Key=key),
        lambda: s3.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": "source"}
        ),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        if excinfo.value.operation_name != "HeadObject":  # HEAD carries no error body
            assert excinfo.value.response["Error"]["Code"] == "KeyTooLongError"
    assert all_keys_v2(s3, bucket) == ([], [])


def upstream_objects(upstream) -> dict[str, str]:
    """Every object of the upstream bucket: key -> ETag."""
    found = {}
    for page in upstream.get_paginator("list_objects_v2").paginate(Bucket=UPSTREAM_BUCKET):
        found.update({entry["Key"]: entry["ETag"] for entry in page.get("Contents", [])})
    return found


def has_dot_segment(key: str) -> bool:
    return any(segment in (".", "..") for segment in key.split("/"))


@pytest.fixture(scope="module")
def own_upstream(
    pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OwnUpstream]:
    """A moto and a gateway of this module's own: every test lists the whole upstream bucket to
    see where a key landed, which on the session's moto (thousands of objects) costs seconds."""
    with own_upstream_gateway(tmp_path_factory.mktemp("hostile-upstream"), pg_server_dsn) as own:
        yield own


@pytest.mark.parametrize("key", HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_round_trip_upstream(own_upstream: OwnUpstream, key: str) -> None:
    """On an upstream profile a hostile key becomes exactly one upstream object, under its
    bucket's prefix and never among the variants; or, where the upstream could not keep it
    literally, a clear refusal that writes nothing."""
    upstream_gateway, upstream_s3 = own_upstream.gateway, own_upstream.moto.client()
    probe = f"probe-{uuid.uuid4().hex[:12]}/{key}"
    if len(probe.encode()) <= 1024:
        try:
            upstream_s3.put_object(Bucket=UPSTREAM_BUCKET, Key=probe, Body=b"probe")
        except ClientError:
            pytest.skip("the test upstream (moto) cannot hold this key itself")
        upstream_s3.delete_object(Bucket=UPSTREAM_BUCKET, Key=probe)
    s3 = client(upstream_gateway.endpoint)
    bucket = f"hostile-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    body = body_for(key)
    before = upstream_objects(upstream_s3)
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    except ClientError as error:
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        if len(key.encode()) > longest_key(upstream_gateway, bucket):
            assert error.response["Error"]["Code"] == "KeyTooLongError"
        else:
            # Refusing a dot segment is the one other allowed answer: an upstream or a proxy
            # that normalised it would read and write another bucket's objects.
            assert has_dot_segment(key), error.response["Error"]
        assert upstream_objects(upstream_s3) == before
        return
    assert len(key.encode()) <= longest_key(upstream_gateway, bucket)
    new = set(upstream_objects(upstream_s3)) - set(before)
    assert len(new) == 1
    (stored,) = new
    assert stored.startswith(upstream_key(bucket, ""))
    assert not stored.startswith(UPSTREAM_VARIANTS_PREFIX)
    assert upstream_s3.get_object(Bucket=UPSTREAM_BUCKET, Key=stored)["Body"].read() == body
    if not has_dot_segment(key):
        assert stored == upstream_key(bucket, key)

    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert all_keys_v2(s3, bucket) == ([key], [])
    s3.copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key},
        MetadataDirective="REPLACE",
        Metadata={"copied": "yes"},
    )
    assert set(upstream_objects(upstream_s3)) - set(before) == {stored}
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    s3.delete_object(Bucket=bucket, Key=key)
    assert upstream_objects(upstream_s3) == before
    assert all_keys_v2(s3, bucket) == ([], [])


def test_canaries_untouched(jail: Jail) -> None:
    for canary in CANARIES:
        assert (jail.root / canary).read_text() == "canary\n"
