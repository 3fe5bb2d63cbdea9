"""Large objects through real tools with their default multipart settings.

aws-cli copies a 1 GiB file up and back (8 MiB parts, 10 in parallel, as it does by default;
128 MiB through the upstream profile);
s3cmd puts and gets a 40 MiB file (its own 15 MiB multipart chunks). Each round trip is
compared byte for byte, and the ETag against the S3 rule md5(concat(part md5s))-N.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import LOCAL, REGION, ROOT_ACCESS_KEY, ROOT_SECRET_KEY, GatewayProcess
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
    # Installed by the test extra beside this interpreter.
    s3cmd = shutil.which("s3cmd", path=str(Path(sys.executable).parent)) or "s3cmd"
    config = tmp_path / "s3cfg"
    host = f"127.0.0.1:{gateway.port}"
    config.write_text(
        "[default]\n"
        f"access_key = {ROOT_ACCESS_KEY}\n"
        f"secret_key = {ROOT_SECRET_KEY}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        f"bucket_location = {REGION}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [s3cmd, "-c", str(config), *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

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
    listing = run("ls", "-r", f"s3://{bucket}").stdout
    assert f"s3://{bucket}/dir/forty.bin" in listing
    run("del", f"s3://{bucket}/dir/forty.bin")
    run("rb", f"s3://{bucket}")
