"""aws-cli (v1) driven as a subprocess, the way operators and scripts use the gateway.

Tests that send or fetch object bodies run over HTTP and over HTTPS: aws-cli sends aws-chunked
bodies with checksum trailers only over HTTPS, and plain bodies with checksum headers over HTTP.
The others run over HTTP only (each aws-cli start costs most of a second).

Files above aws-cli's 8 MiB multipart_threshold go up as multipart uploads: test_multipart.py
copies a large file up and back; here the largest round trip (7 MiB) stays a single PUT.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import LOCAL_ONLY, REGION, ROOT_ACCESS_KEY, ROOT_SECRET_KEY, GatewayProcess

# Names that need percent-encoding in paths and in encoding-type=url listings.
AWKWARD_FILES = {
    "plain.txt": b"plain\n",
    "with space.txt": b"space\n",
    "dir with space/inner file.txt": b"inner\n",
    "plus+sign.txt": b"plus\n",
    "a+b/c+d.bin": os.urandom(3000),
    "100% sure.txt": b"percent\n",
    "pct%2Fnot-a-slash.txt": b"encoded slash\n",
    "ünïcödé/日本語 ファイル.txt": b"unicode\n",
    "emoji-😀.txt": b"emoji\n",
    "deep/a/b/c/d/leaf.bin": os.urandom(70_000),
    "empty": b"",
}


@dataclass
class AwsCli:
    endpoint: str
    env: dict[str, str]
    ca_bundle: str | None
    # Where requests-based checks must look for the server certificate.
    verify: str | bool

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "awscli", "--endpoint-url", self.endpoint, *args]
        if self.ca_bundle:
            command += ["--ca-bundle", self.ca_bundle]
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, encoding="utf-8", timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def json(self, *args: str) -> dict[str, Any]:
        output = self.run(*args, "--output", "json").stdout
        return json.loads(output) if output.strip() else {}


def cli_env(tmp_path: Path, config_text: str = "") -> dict[str, str]:
    """The inherited environment without any AWS_* settings, plus test credentials.

    Config and credentials files are private and empty, so nothing from the host leaks in.
    """
    config = tmp_path / "aws-config"
    credentials = tmp_path / "aws-credentials"
    config.write_text(config_text)
    credentials.write_text("")
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ROOT_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=ROOT_SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(credentials),
        AWS_EC2_METADATA_DISABLED="true",
        HOME=str(tmp_path),
        # Unicode file names and keys in aws-cli's output, whatever the host locale is.
        PYTHONUTF8="1",
        PYTHONIOENCODING="utf-8",
    )
    return env


# For tests where the transport changes nothing the gateway sees but the scheme.
HTTP_ONLY = pytest.mark.parametrize("aws", ["http"], indirect=True)


@pytest.fixture(params=["http", "https"])
def aws(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    gateway: GatewayProcess,
) -> AwsCli:
    if request.param == "http":
        return AwsCli(gateway.endpoint, cli_env(tmp_path), None, True)
    tls_gateway: GatewayProcess = request.getfixturevalue("tls_gateway")
    ca_bundle: str = request.getfixturevalue("ca_bundle")
    return AwsCli(tls_gateway.endpoint, cli_env(tmp_path), ca_bundle, ca_bundle)


@pytest.fixture
def cli_bucket(aws: AwsCli) -> str:
    """A bucket made with `aws s3 mb` (so mb itself is exercised by every test)."""
    name = f"cli-{uuid.uuid4().hex[:16]}"
    result = aws.run("s3", "mb", f"s3://{name}")
    assert f"make_bucket: {name}" in result.stdout
    return name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree_files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file()
    }


def transfer_lines(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if line.startswith(("upload:", "download:", "copy:", "delete:"))
    ]


@HTTP_ONLY
def test_mb_ls_rb(aws: AwsCli, s3) -> None:
    name = f"cli-{uuid.uuid4().hex[:16]}"
    aws.run("s3", "mb", f"s3://{name}")
    assert name in aws.run("s3", "ls").stdout.split()
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # Creating it again succeeds in us-east-1, as in S3 (elsewhere: BucketAlreadyOwnedByYou).
    aws.run("s3", "mb", f"s3://{name}")
    s3.put_object(Bucket=name, Key="keep", Body=b"1")
    refused = aws.run("s3", "rb", f"s3://{name}", check=False)
    assert refused.returncode != 0
    assert "BucketNotEmpty" in refused.stderr
    aws.run("s3", "rm", f"s3://{name}/keep")
    result = aws.run("s3", "rb", f"s3://{name}")
    assert f"remove_bucket: {name}" in result.stdout
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@HTTP_ONLY
def test_rb_force(aws: AwsCli, cli_bucket: str, s3) -> None:
    for index in range(3):
        s3.put_object(Bucket=cli_bucket, Key=f"d/{index}", Body=b"x")
    aws.run("s3", "rb", f"s3://{cli_bucket}", "--force")
    assert cli_bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# 100 KB is above the gateway's inline read size; 7 MiB is just below the multipart threshold.
@pytest.mark.parametrize("size", [0, 100_000, 7 * 1024 * 1024])
def test_cp_up_and_down(aws: AwsCli, cli_bucket: str, s3, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    result = aws.run("s3", "cp", str(source), f"s3://{cli_bucket}/up/source.bin")
    assert "upload:" in result.stdout
    stored = s3.get_object(Bucket=cli_bucket, Key="up/source.bin")
    assert stored["ContentLength"] == size
    assert sha256(stored["Body"].read()) == sha256(data)
    # A single PUT: the ETag is the MD5 of the bytes.
    assert stored["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'

    target = tmp_path / "target.bin"
    aws.run("s3", "cp", f"s3://{cli_bucket}/up/source.bin", str(target))
    assert sha256(target.read_bytes()) == sha256(data)


def test_cp_stdin_and_stdout(aws: AwsCli, cli_bucket: str, s3, tmp_path: Path) -> None:
    data = b"streamed through a pipe\n" * 1000
    command = [sys.executable, "-m", "awscli", "--endpoint-url", aws.endpoint]
    if aws.ca_bundle:
        command += ["--ca-bundle", aws.ca_bundle]
    subprocess.run(
        [*command, "s3", "cp", "-", f"s3://{cli_bucket}/piped"],
        input=data,
        env=aws.env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert s3.get_object(Bucket=cli_bucket, Key="piped")["Body"].read() == data
    out = subprocess.run(
        [*command, "s3", "cp", f"s3://{cli_bucket}/piped", "-"],
        env=aws.env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.stdout == data


@HTTP_ONLY
def test_ls(aws: AwsCli, cli_bucket: str, s3) -> None:
    for key, body in {
        "top.txt": b"1",
        "dir/a.txt": b"22",
        "dir/b.txt": b"333",
        "dir/sub/c.txt": b"4444",
        "dirt.txt": b"55555",
    }.items():
        s3.put_object(Bucket=cli_bucket, Key=key, Body=body)

    top = aws.run("s3", "ls", f"s3://{cli_bucket}").stdout.splitlines()
    assert sorted(line.split()[-1] for line in top) == ["dir/", "dirt.txt", "top.txt"]
    assert any(line.split()[:1] == ["PRE"] and line.endswith("dir/") for line in top)

    # Trailing slash: the contents of the "directory".
    inside = aws.run("s3", "ls", f"s3://{cli_bucket}/dir/").stdout.splitlines()
    assert sorted(line.split()[-1] for line in inside) == ["a.txt", "b.txt", "sub/"]
    # No trailing slash: a prefix match, rolled up at the delimiter.
    prefix = aws.run("s3", "ls", f"s3://{cli_bucket}/dir").stdout.splitlines()
    assert sorted(line.split()[-1] for line in prefix) == ["dir/", "dirt.txt"]

    recursive = aws.run("s3", "ls", f"s3://{cli_bucket}", "--recursive").stdout.splitlines()
    listed = {line.split()[-1]: int(line.split()[2]) for line in recursive}
    assert listed == {
        "dir/a.txt": 2,
        "dir/b.txt": 3,
        "dir/sub/c.txt": 4,
        "dirt.txt": 5,
        "top.txt": 1,
    }
    summary = aws.run("s3", "ls", f"s3://{cli_bucket}/dir/", "--recursive", "--summarize").stdout
    assert "Total Objects: 3" in summary
    assert "Total Size: 9" in summary


@HTTP_ONLY
def test_ls_paginates(aws: AwsCli, cli_bucket: str, s3) -> None:
    keys = [f"many/{index:04d}" for index in range(25)]
    for key in keys:
        s3.put_object(Bucket=cli_bucket, Key=key, Body=b"")
    # --page-size forces continuation tokens on every page.
    output = aws.run(
        "s3", "ls", f"s3://{cli_bucket}/many/", "--recursive", "--page-size", "7"
    ).stdout
    assert [line.split()[-1] for line in output.splitlines()] == keys


def test_sync_awkward_names(aws: AwsCli, cli_bucket: str, s3, tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_tree(source, AWKWARD_FILES)

    up = aws.run("s3", "sync", str(source), f"s3://{cli_bucket}/tree")
    assert len(transfer_lines(up.stdout)) == len(AWKWARD_FILES)
    listed = s3.list_objects_v2(Bucket=cli_bucket, Prefix="tree/")["Contents"]
    assert sorted(entry["Key"] for entry in listed) == sorted(
        f"tree/{name}" for name in AWKWARD_FILES
    )
    for name, data in AWKWARD_FILES.items():
        assert s3.get_object(Bucket=cli_bucket, Key=f"tree/{name}")["Body"].read() == data

    target = tmp_path / "target"
    down = aws.run("s3", "sync", f"s3://{cli_bucket}/tree", str(target))
    assert len(transfer_lines(down.stdout)) == len(AWKWARD_FILES)
    assert tree_files(target) == AWKWARD_FILES
    mismatch = filecmp.dircmp(source, target)
    assert not mismatch.left_only and not mismatch.right_only and not mismatch.diff_files

    # Nothing changed on either side: both directions transfer nothing.
    assert (
        transfer_lines(aws.run("s3", "sync", str(source), f"s3://{cli_bucket}/tree").stdout) == []
    )
    assert (
        transfer_lines(aws.run("s3", "sync", f"s3://{cli_bucket}/tree", str(target)).stdout) == []
    )

    # One file changes size and one is removed locally: only those are transferred/deleted.
    (source / "plain.txt").write_bytes(b"plain, but longer now\n")
    (source / "plus+sign.txt").unlink()
    again = aws.run("s3", "sync", str(source), f"s3://{cli_bucket}/tree", "--delete")
    assert sorted(line.split()[0] for line in transfer_lines(again.stdout)) == [
        "delete:",
        "upload:",
    ]
    body = s3.get_object(Bucket=cli_bucket, Key="tree/plain.txt")["Body"].read()
    assert body == b"plain, but longer now\n"
    remaining = s3.list_objects_v2(Bucket=cli_bucket, Prefix="tree/")["Contents"]
    assert "tree/plus+sign.txt" not in {entry["Key"] for entry in remaining}


@HTTP_ONLY
def test_rm_and_rm_recursive(aws: AwsCli, cli_bucket: str, s3) -> None:
    keys = ["keep.txt", "gone.txt", "dir/a", "dir/b c", "dir/sub/ü+%", "dirt"]
    for key in keys:
        s3.put_object(Bucket=cli_bucket, Key=key, Body=key.encode())

    result = aws.run("s3", "rm", f"s3://{cli_bucket}/gone.txt")
    assert f"delete: s3://{cli_bucket}/gone.txt" in result.stdout
    result = aws.run("s3", "rm", f"s3://{cli_bucket}/dir", "--recursive")
    assert len(transfer_lines(result.stdout)) == 3

    listed = s3.list_objects_v2(Bucket=cli_bucket).get("Contents", [])
    # "dirt" survives: --recursive on "dir" means the prefix "dir/".
    assert sorted(entry["Key"] for entry in listed) == ["dirt", "keep.txt"]


def test_s3api_put_head_get_metadata(aws: AwsCli, cli_bucket: str, tmp_path: Path) -> None:
    body = tmp_path / "page.html"
    body.write_bytes(b"<h1>hello</h1>")
    put = aws.json(
        "s3api", "put-object",
        "--bucket", cli_bucket, "--key", "docs/page.html", "--body", str(body),
        "--metadata", "author=Zoe,purpose=round trip",
        "--content-type", "text/html; charset=utf-8",
        "--cache-control", "max-age=60, public",
        "--content-disposition", 'attachment; filename="page.html"',
    )  # fmt: skip
    etag = f'"{hashlib.md5(b"<h1>hello</h1>").hexdigest()}"'
    assert put["ETag"] == etag

    head = aws.json("s3api", "head-object", "--bucket", cli_bucket, "--key", "docs/page.html")
    expected = {
        "ContentLength": 14,
        "ETag": etag,
        "ContentType": "text/html; charset=utf-8",
        "CacheControl": "max-age=60, public",
        "ContentDisposition": 'attachment; filename="page.html"',
    }
    assert {name: head.get(name) for name in expected} == expected
    assert head["Metadata"] == {"author": "Zoe", "purpose": "round trip"}

    out = tmp_path / "out.html"
    got = aws.json(
        "s3api", "get-object", "--bucket", cli_bucket, "--key", "docs/page.html", str(out)
    )
    assert out.read_bytes() == b"<h1>hello</h1>"
    assert {name: got.get(name) for name in expected} == expected
    assert got["Metadata"] == head["Metadata"]

    ranged = tmp_path / "ranged"
    part = aws.json(
        "s3api", "get-object", "--bucket", cli_bucket, "--key", "docs/page.html",
        "--range", "bytes=4-8", str(ranged),
    )  # fmt: skip
    assert ranged.read_bytes() == b"hello"
    assert part["ContentRange"] == "bytes 4-8/14"


@HTTP_ONLY
def test_s3api_head_missing(aws: AwsCli, cli_bucket: str) -> None:
    result = aws.run(
        "s3api", "head-object", "--bucket", cli_bucket, "--key", "missing", check=False
    )
    assert result.returncode != 0
    assert "404" in result.stderr
    result = aws.run(
        "s3api", "get-object", "--bucket", cli_bucket, "--key", "missing", "/dev/null",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "NoSuchKey" in result.stderr


@HTTP_ONLY
def test_s3api_list_objects_v2_delimiter(aws: AwsCli, cli_bucket: str, s3) -> None:
    for key in ["a/1", "a/2", "a/b/3", "a/c/4", "a/c/5", "z", "a+b/6", "a b/7"]:
        s3.put_object(Bucket=cli_bucket, Key=key, Body=b"x")

    top = aws.json("s3api", "list-objects-v2", "--bucket", cli_bucket, "--delimiter", "/")
    assert [entry["Key"] for entry in top["Contents"]] == ["z"]
    # UTF-8 byte order: " " < "+" < "/".
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a b/", "a+b/", "a/"]

    # --no-paginate shows one raw response, with the fields the paginator drops when merging.
    nested = aws.json(
        "s3api", "list-objects-v2", "--bucket", cli_bucket, "--delimiter", "/",
        "--prefix", "a/", "--no-paginate",
    )  # fmt: skip
    assert [entry["Key"] for entry in nested["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in nested["CommonPrefixes"]] == ["a/b/", "a/c/"]
    assert nested["Prefix"] == "a/"
    assert nested["Delimiter"] == "/"
    assert nested["KeyCount"] == 4
    assert nested["IsTruncated"] is False

    # aws-cli follows continuation tokens itself; --page-size makes it need several.
    paged = aws.json(
        "s3api", "list-objects-v2", "--bucket", cli_bucket, "--delimiter", "/",
        "--page-size", "1",
    )  # fmt: skip
    assert [entry["Key"] for entry in paged["Contents"]] == ["z"]
    assert [p["Prefix"] for p in paged["CommonPrefixes"]] == ["a b/", "a+b/", "a/"]


def test_s3api_delete_objects(aws: AwsCli, cli_bucket: str, s3) -> None:
    for key in ["one", "two", "three", "with space", "plus+"]:
        s3.put_object(Bucket=cli_bucket, Key=key, Body=b"x")
    request = {
        "Objects": [{"Key": k} for k in ["one", "two", "with space", "plus+", "never-existed"]],
        "Quiet": False,
    }
    result = aws.json(
        "s3api", "delete-objects", "--bucket", cli_bucket, "--delete", json.dumps(request)
    )
    assert sorted(entry["Key"] for entry in result["Deleted"]) == [
        "never-existed",
        "one",
        "plus+",
        "two",
        "with space",
    ]
    assert not result.get("Errors")
    remaining = s3.list_objects_v2(Bucket=cli_bucket)["Contents"]
    assert [entry["Key"] for entry in remaining] == ["three"]

    quiet = aws.json(
        "s3api", "delete-objects", "--bucket", cli_bucket,
        "--delete", json.dumps({"Objects": [{"Key": "three"}], "Quiet": True}),
    )  # fmt: skip
    assert not quiet.get("Deleted") and not quiet.get("Errors")
    assert s3.list_objects_v2(Bucket=cli_bucket)["KeyCount"] == 0


@HTTP_ONLY
def test_s3api_copy_object_replace_metadata(aws: AwsCli, cli_bucket: str, s3) -> None:
    s3.put_object(
        Bucket=cli_bucket,
        Key="source",
        Body=b"copy me",
        ContentType="text/plain",
        Metadata={"old": "1", "kept": "no"},
        CacheControl="no-cache",
    )
    result = aws.json(
        "s3api", "copy-object", "--bucket", cli_bucket, "--key", "target dir/copy+1",
        "--copy-source", f"{cli_bucket}/source",
        "--metadata-directive", "REPLACE",
        "--metadata", "new=2",
        "--content-type", "application/x-copied",
    )  # fmt: skip
    etag = f'"{hashlib.md5(b"copy me").hexdigest()}"'
    assert result["CopyObjectResult"]["ETag"] == etag

    head = s3.head_object(Bucket=cli_bucket, Key="target dir/copy+1")
    assert head["Metadata"] == {"new": "2"}
    assert head["ContentType"] == "application/x-copied"
    # REPLACE replaces the stored headers too.
    assert "CacheControl" not in head
    assert s3.get_object(Bucket=cli_bucket, Key="target dir/copy+1")["Body"].read() == b"copy me"
    source = s3.head_object(Bucket=cli_bucket, Key="source")
    assert source["Metadata"] == {"old": "1", "kept": "no"}

    # Copying onto itself with REPLACE is how metadata is edited in place.
    aws.json(
        "s3api", "copy-object", "--bucket", cli_bucket, "--key", "source",
        "--copy-source", f"{cli_bucket}/source",
        "--metadata-directive", "REPLACE", "--metadata", "edited=yes",
    )  # fmt: skip
    edited = s3.head_object(Bucket=cli_bucket, Key="source")
    assert edited["Metadata"] == {"edited": "yes"}
    assert edited["ContentLength"] == len(b"copy me")


@HTTP_ONLY
def test_s3_cp_between_keys(aws: AwsCli, cli_bucket: str, s3) -> None:
    s3.put_object(Bucket=cli_bucket, Key="from/ä b+c", Body=b"server side", ContentType="x/y")
    aws.run("s3", "cp", f"s3://{cli_bucket}/from/ä b+c", f"s3://{cli_bucket}/to/ä b+c")
    copied = s3.get_object(Bucket=cli_bucket, Key="to/ä b+c")
    assert copied["Body"].read() == b"server side"
    assert copied["ContentType"] == "x/y"


def _presign(aws: AwsCli, bucket: str, key: str, expires: int) -> str:
    return aws.run("s3", "presign", f"s3://{bucket}/{key}", "--expires-in", str(expires)).stdout


def _check_presigned(aws: AwsCli, bucket: str, s3, sigv4: bool) -> None:
    data = os.urandom(100_000)
    key = "shared/report 2024+ü.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=data)

    url = _presign(aws, bucket, key, 300).strip()
    assert ("X-Amz-Signature=" in url) is sigv4
    response = requests.get(url, verify=aws.verify, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == data

    expired = _presign(aws, bucket, key, 1).strip()
    time.sleep(2)
    response = requests.get(expired, verify=aws.verify, timeout=30)
    assert response.status_code == 403, response.text
    assert "<Code>AccessDenied</Code>" in response.text

    # The signature covers the key: the same query on another key is refused.
    s3.put_object(Bucket=bucket, Key="other", Body=b"secret")
    path, _, query = url.partition("?")
    tampered = path.rsplit("/", 1)[0] + "/other?" + query
    response = requests.get(tampered, verify=aws.verify, timeout=30)
    assert response.status_code == 403, response.text


@LOCAL_ONLY
def test_presign_default(aws: AwsCli, cli_bucket: str, s3) -> None:
    """aws-cli v1 presigns with SigV2 query parameters unless configured otherwise."""
    _check_presigned(aws, cli_bucket, s3, sigv4=False)


@LOCAL_ONLY
def test_presign_sigv4(aws: AwsCli, cli_bucket: str, s3, tmp_path: Path) -> None:
    config_dir = tmp_path / "sigv4"
    config_dir.mkdir()
    aws.env = cli_env(config_dir, "[default]\ns3 =\n  signature_version = s3v4\n")
    _check_presigned(aws, cli_bucket, s3, sigv4=True)
