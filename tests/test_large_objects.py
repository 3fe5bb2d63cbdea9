"""Large objects through real tools with their default multipart settings.

aws-cli copies a 1 GiB file up and back (8 MiB parts, 10 in parallel, as it does by default;
128 MiB through the upstream profile);
s3cmd puts and gets a 40 MiB file (its own 15 MiB multipart chunks). Each round trip is
compared byte for byte, and the ETag against the S3 rule md5(concat(part md5s))-N.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from tests.conftest import LOCAL, GatewayProcess
from tests.s3cmd import s3cmd_runner
from tests.test_awscli import AwsCli, cli_env

MIB = 1024 * 1024


def write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes; return their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 8 * MIB))
            handle.write(block)
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


def multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 computes for ``path`` uploaded in parts of ``part_size``."""
    digests = []
    with open(path, "rb") as handle:
        while block := handle.read(part_size):
            digests.append(hashlib.md5(block).digest())
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def test_awscli_copies_a_large_file_up_and_back(
    gateway: GatewayProcess, s3, tmp_path: Path
) -> None:
    # 1 GiB on local disk; through moto, which holds every byte in its memory, 128 MiB still
    # makes aws-cli upload 16 parts in parallel and download them as ranges.
    size = 1024 * MIB if gateway.profile == LOCAL else 128 * MIB
    aws = AwsCli(gateway.endpoint, cli_env(tmp_path), None, True)
    bucket = f"big-{uuid.uuid4().hex[:12]}"
    aws.run("s3", "mb", f"s3://{bucket}")
    source = tmp_path / "one-gib.bin"
    expected = write_random(source, size)
    aws.run("s3", "cp", str(source), f"s3://{bucket}/one-gib.bin")
    head = s3.head_object(Bucket=bucket, Key="one-gib.bin")
    assert head["ContentLength"] == size
    assert head["ETag"] == multipart_etag(source, 8 * MIB)
    target = tmp_path / "back.bin"
    aws.run("s3", "cp", f"s3://{bucket}/one-gib.bin", str(target))
    assert file_sha256(target) == expected
    aws.run("s3", "rm", f"s3://{bucket}/one-gib.bin")


def test_s3cmd_multipart_put_and_get(gateway: GatewayProcess, s3, tmp_path: Path) -> None:
    run = s3cmd_runner(gateway, tmp_path)
    bucket = f"s3cmd-{uuid.uuid4().hex[:12]}"
    run("mb", f"s3://{bucket}")
    source = tmp_path / "forty.bin"
    expected = write_random(source, 40 * MIB)
    run("put", str(source), f"s3://{bucket}/dir/forty.bin")
    head = s3.head_object(Bucket=bucket, Key="dir/forty.bin")
    assert head["ETag"] == multipart_etag(source, 15 * MIB)
    target = tmp_path / "forty-back.bin"
    run("get", f"s3://{bucket}/dir/forty.bin", str(target))
    assert file_sha256(target) == expected
    listing = run("ls", "-r", f"s3://{bucket}")
    assert f"s3://{bucket}/dir/forty.bin" in listing
    run("del", f"s3://{bucket}/dir/forty.bin")
    run("rb", f"s3://{bucket}")
