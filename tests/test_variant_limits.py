"""What one hostile source can cost a running gateway: render time, worker memory, and how
long a render cut short by a crash holds its variant up.

Each test runs a gateway of its own (a sibling of the suite's, over the same database and
storage) with one render worker, so the worker that rendered is the one measured.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import LOCAL, LOCAL_ONLY, UPSTREAM, GatewayProcess, S3Client
from tests.test_variants import (
    derivative_rows,
    error_code,
    image_of,
    put,
    variant,
    version_of,
)
from tests.unit.variants import images

# Render limits do not depend on the storage transforms (the sealed profile is local disk).
GATEWAY_PROFILES = [LOCAL, UPSTREAM]

MiB = 1024**2


def sibling(gateway: GatewayProcess, tmp_path: Path, name: str, **limits: object) -> GatewayProcess:
    return gateway.sibling(
        tmp_path / f"{name}.yaml",
        limits={"garbage_grace_seconds": 3600, "render_workers": 1, **limits},
    )


def worker_peaks(gateway: GatewayProcess) -> dict[int, int]:
    """Peak resident set (VmHWM, bytes) of each render worker of ``gateway``, by pid."""
    assert gateway.process is not None
    parent = gateway.process.pid
    peaks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["PPid"]) == parent and b"spawn_main" in command:
            peaks[int(entry.name)] = int(fields["VmHWM"].split()[0]) * 1024
    return peaks


def wait_for_status(dsn: str, version: uuid.UUID, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not any(row["status"] == status for row in derivative_rows(dsn, version, settled=False)):
        assert time.monotonic() < deadline, f"no {status} derivative of {version}"
        time.sleep(0.05)


# --- render time ----------------------------------------------------------------------------


@pytest.fixture
def quick(tmp_path: Path, gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    """Renders may take 2 seconds."""
    with sibling(gateway, tmp_path, "quick", render_timeout_seconds=2).running() as process:
        yield process


def test_a_decode_stuck_in_c_is_cut_at_its_deadline(
    quick, s3, bucket: str, gateway_dsn: str
) -> None:
    # Hundreds of refinement scans in one 64 KiB read: libjpeg decodes them all in one call
    # (some 20 s here), where the worker's alarm cannot reach it.
    put(s3, bucket, "scans.jpg", images.many_scan_jpeg(600, (6000, 4000)))
    put(s3, bucket, "plain.jpg", images.jpeg_with_orientation(1))
    started = time.monotonic()
    stuck = variant(quick, bucket, "scans.jpg", "thumb")
    assert (stuck.status_code, error_code(stuck)) == (503, "SlowDown")
    assert time.monotonic() - started < 10
    # Recorded, so the next GET does not decode it again before a back-off.
    (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, "scans.jpg"))
    assert row["status"] == "failed" and row["error"].startswith("SlowDown:")
    again = variant(quick, bucket, "scans.jpg", "thumb")
    assert (again.status_code, error_code(again)) == (503, "SlowDown")
    # The one worker was killed, not left decoding: the next render has a worker at once.
    assert image_of(variant(quick, bucket, "plain.jpg", "thumb")).size == (64, 64)
    assert time.monotonic() - started < 15


# --- render memory --------------------------------------------------------------------------


@pytest.fixture
def defaults(tmp_path: Path, gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    """Default render limits, one worker."""
    with sibling(gateway, tmp_path, "defaults").running() as process:
        yield process


def assert_refused_too_large(
    gateway: GatewayProcess, s3: S3Client, dsn: str, bucket: str, key: str, png: bytes
) -> None:
    """The thumb of ``png`` is refused as ImageTooLarge, and the refusal recorded, so the next
    GET does not decode it again."""
    put(s3, bucket, key, png, "image/png")
    refused = variant(gateway, bucket, key, "thumb")
    assert (refused.status_code, error_code(refused)) == (400, "ImageTooLarge")
    (row,) = derivative_rows(dsn, version_of(dsn, bucket, key))
    assert row["status"] == "failed" and row["error"].startswith("ImageTooLarge:")


def test_a_sixteen_bit_png_renders_in_little_memory(
    defaults, s3, bucket: str, gateway_dsn: str
) -> None:
    # 10000x10000 16-bit grey, some 190 KB: decoded as 16 bits and scaled through 32-bit
    # copies it took a worker to 1 GB.
    put(s3, bucket, "grey16.png", images.uniform_png(10_000, 10_000, 0, 16), "image/png")
    image = image_of(variant(defaults, bucket, "grey16.png", "small"))
    assert (image.size, image.mode, image.getpixel((5, 5))) == ((100, 100), "L", 0)
    (peak,) = worker_peaks(defaults).values()
    assert peak < 400 * MiB


def test_a_tall_one_pixel_png_is_refused_before_it_is_decoded(
    defaults, s3, bucket: str, gateway_dsn: str
) -> None:
    # 1 x 100,000,000: within the pixel limit, but a row pointer per pixel: 900 MB decoded.
    tall = images.uniform_png(1, 100_000_000, 0, 8)
    assert_refused_too_large(defaults, s3, gateway_dsn, bucket, "tall.png", tall)
    (peak,) = worker_peaks(defaults).values()
    assert peak < 400 * MiB


def test_a_render_out_of_memory_is_recorded_as_image_too_large(
    defaults, s3, bucket: str, gateway_dsn: str
) -> None:
    # One row of 100,000,000 RGB pixels: Pillow's decoder cannot allocate it. The MemoryError
    # was a 500, recorded nowhere, so every GET decoded it again.
    one_row = images.uniform_png(100_000_000, 1, 2, 8)
    assert_refused_too_large(defaults, s3, gateway_dsn, bucket, "row.png", one_row)


def test_the_largest_allowed_png_still_renders(defaults, s3, bucket: str) -> None:
    # 10000x10000 RGB is the default pixel limit exactly, and fits the default memory.
    put(s3, bucket, "wide.png", images.uniform_png(10_000, 10_000, 2, 8), "image/png")
    assert image_of(variant(defaults, bucket, "wide.png", "thumb")).size == (64, 64)


def test_render_memory_is_configurable(
    tmp_path: Path, gateway: GatewayProcess, s3, bucket: str, gateway_dsn: str
) -> None:
    put(s3, bucket, "wide.png", images.uniform_png(10_000, 10_000, 2, 8), "image/png")
    small = sibling(gateway, tmp_path, "small", render_memory_bytes="384MiB")
    with small.running():
        refused = variant(small, bucket, "wide.png", "thumb")
        assert (refused.status_code, error_code(refused)) == (400, "ImageTooLarge")
        assert "128 MiB" in refused.text
        (peak,) = worker_peaks(small).values()
        assert peak < 384 * MiB
    (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, "wide.png"))
    assert row["status"] == "failed" and row["error"].startswith("ImageTooLarge:")


# --- a crash mid-render ---------------------------------------------------------------------


@LOCAL_ONLY
def test_a_render_killed_with_its_gateway_is_taken_over_promptly(
    tmp_path: Path, gateway: GatewayProcess, s3, bucket: str, gateway_dsn: str
) -> None:
    # Renders may take 30 s: a lease that had to outlast the slowest render held a variant
    # for 2 x 30 + 60 s after its gateway died.
    first = sibling(gateway, tmp_path, "first", render_timeout_seconds=30)
    put(s3, bucket, "slow.jpg", images.many_scan_jpeg(600, (6000, 4000)))
    put(s3, bucket, "queued.jpg", images.jpeg_with_orientation(1))
    slow = version_of(gateway_dsn, bucket, "slow.jpg")
    queued = version_of(gateway_dsn, bucket, "queued.jpg")
    with ThreadPoolExecutor(2) as clients:
        first.start()
        try:
            # The slow render holds the one worker; the second is claimed and waits for it.
            clients.submit(variant, first, bucket, "slow.jpg", "thumb")
            wait_for_status(gateway_dsn, slow, "pending")
            clients.submit(variant, first, bucket, "queued.jpg", "thumb")
            wait_for_status(gateway_dsn, queued, "pending")
        finally:
            first.kill()
    second = sibling(gateway, tmp_path, "second", render_timeout_seconds=30)
    with second.running():
        started = time.monotonic()
        try:
            response = variant(second, bucket, "queued.jpg", "thumb")
        except requests.Timeout:
            pytest.fail("the dead gateway's claim held the variant for a minute")
        assert image_of(response).size == (64, 64)
        assert time.monotonic() - started < 30
    (row,) = derivative_rows(gateway_dsn, queued)
    assert (row["status"], row["attempts"]) == ("ready", 2)
