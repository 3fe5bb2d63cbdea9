"""`gateway import BUCKET --from-dir PATH`: a folder copied into a bucket through its profile,
resumable, with a dry run, beside a serving gateway."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import GatewayProcess, S3Client


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "index.html": b"<h1>home</h1>",
        "css/site.css": b"h1 {}",
        "img/deep/photo.bin": os.urandom(3 * 1024 * 1024 + 5),
        "empty.txt": b"",
        "d\u00e9j\u00e0 vu.txt": b"accents",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "link").symlink_to(root / "index.html")
    return files


def test_folder_import_resumes_and_dry_runs(
    gateway: GatewayProcess, s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "site"
    files = make_tree(root)

    dry = gateway.command(
        "import", bucket, "--from-dir", str(root), "--prefix", "www/", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert f"{len(files)} files" in dry.stdout and "0 already imported" in dry.stdout
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)

    first = gateway.command("import", bucket, "--from-dir", str(root), "--prefix", "www/")
    assert first.returncode == 0, first.stderr
    assert f"imported {len(files)} files" in first.stdout
    assert "skipped: " in first.stderr and "link" in first.stderr
    for name, data in files.items():
        stored = s3.get_object(Bucket=bucket, Key=f"www/{name}")
        assert stored["Body"].read() == data, name
    assert s3.head_object(Bucket=bucket, Key="www/index.html")["ContentType"] == "text/html"

    # Run again: nothing to do. Change one file: only that one goes again.
    again = gateway.command("import", bucket, "--from-dir", str(root), "--prefix", "www/")
    assert "imported 0 files" in again.stdout and f"{len(files)} already imported" in again.stdout
    (root / "css/site.css").write_bytes(b"h1 { color: red }")
    later = time.time() + 5
    os.utime(root / "css/site.css", (later, later))
    changed = gateway.command("import", bucket, "--from-dir", str(root), "--prefix", "www/")
    assert "imported 1 files" in changed.stdout, changed.stdout
    body = s3.get_object(Bucket=bucket, Key="www/css/site.css")["Body"].read()
    assert body == b"h1 { color: red }"


def test_folder_import_refusals(gateway: GatewayProcess, bucket: str, tmp_path: Path) -> None:
    missing = gateway.command("import", bucket, "--from-dir", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "not a directory" in missing.stderr
    no_bucket = gateway.command("import", "no-such-bucket-x", "--from-dir", str(tmp_path))
    assert no_bucket.returncode == 1 and "create it first" in no_bucket.stderr
