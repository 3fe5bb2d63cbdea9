"""Preset options through a live gateway: kept animations, pixel densities (?variant=NAME@2x),
quality per format, progressive JPEG and kept metadata.

One gateway for the module, with presets of its own; images are made on the spot and every
answer is decoded with Pillow (dimensions, frame counts, durations), never compared by bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from tests.conftest import (
    GATEWAY_ENV,
    GatewayProcess,
    S3Client,
    client,
    create_database,
    db_fetch,
    run_gateway,
    wait_for,
)
from tests.test_variants import error_code, signed
from tests.unit.variants import images
from tests.unit.variants.images import decode, encode

BUCKET = "options"
EAGER = "options-eager"
LIMITED = "options-limited"
# Low enough that a small animation's frames together exceed it.
MAX_PIXELS = 400_000
DURATIONS = [80, 120, 160, 200, 240, 280]
PRESETS: dict[str, dict[str, object]] = {
    "anim": {"width": 60, "format": "webp", "animation": "keep", "max_frames": 8},
    "anim-auto": {"width": 60, "format": "auto", "animation": "keep"},
    "anim-jpeg": {"width": 60, "format": "jpeg", "animation": "keep"},
    "still": {"width": 60, "format": "webp"},
    "dense": {"width": 100, "height": 100, "fit": "cover", "format": "webp", "densities": [2, 3]},
    "dense-up": {
        "width": 100,
        "height": 100,
        "fit": "cover",
        "format": "webp",
        "densities": [1, 3],
        "upscale": True,
    },
    "webp-first": {"width": 300, "format": "auto", "quality": {"webp": 90, "jpeg": 20}},
    "jpeg-first": {"width": 300, "format": "auto", "quality": {"webp": 20, "jpeg": 90}},
    "camera": {"width": 100, "format": "jpeg", "strip_metadata": False, "progressive": False},
    "plain": {"width": 100, "format": "jpeg"},
    "eager2x": {
        "width": 40,
        "height": 40,
        "fit": "cover",
        "format": "webp",
        "densities": [2],
        "eager": True,
    },
}
LAZY = [name for name in PRESETS if name != "eager2x"]


@pytest.fixture(scope="module")
def options_gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str
) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("variant-options") / "gateway"
    buckets = {
        BUCKET: {"public_read": "objects", "variants": LAZY},
        EAGER: {"variants": ["eager2x"]},
        LIMITED: {"variants": ["still"]},
    }
    with run_gateway(
        directory,
        create_database(pg_server_dsn),
        {},
        GATEWAY_ENV,
        variants=PRESETS,
        buckets=buckets,
        default_bucket_variants=[],
        limits={
            "garbage_grace_seconds": 3600,
            "body_idle_timeout_seconds": 2,
            "max_source_pixels": MAX_PIXELS,
        },
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def s3(options_gateway: GatewayProcess) -> S3Client:
    return client(options_gateway.endpoint)


def upload(s3: S3Client, data: bytes, suffix: str, bucket: str = BUCKET) -> str:
    key = f"{uuid.uuid4().hex}.{suffix}"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return key


def get(
    gateway: GatewayProcess,
    key: str,
    name: str,
    accept: str | None = None,
    bucket: str = BUCKET,
) -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    return signed(
        gateway.endpoint, "GET", f"/{bucket}/{quote(key)}?variant={quote(name, safe='')}", headers
    )


def ok(response: requests.Response) -> bytes:
    assert response.status_code == 200, response.text
    return response.content


# --- animation ------------------------------------------------------------------------------


@pytest.mark.parametrize("source_format", ["GIF", "WEBP"])
def test_animation_kept(options_gateway: GatewayProcess, s3: S3Client, source_format: str) -> None:
    key = upload(s3, images.animated(source_format, DURATIONS, loop=0), source_format.lower())
    response = get(options_gateway, key, "anim")
    assert response.headers["Content-Type"] == "image/webp"
    assert images.frames_of(ok(response)) == ("WEBP", 6, DURATIONS, 0)
    assert decode(response.content).size == (60, 40)
    # The preset's default keeps the first frame, as ever.
    still = ok(get(options_gateway, key, "still"))
    assert images.frames_of(still)[:2] == ("WEBP", 1)


def test_animation_negotiated(options_gateway: GatewayProcess, s3: S3Client) -> None:
    key = upload(s3, images.animated("GIF", DURATIONS, loop=2), "gif")
    avif_too = get(options_gateway, key, "anim-auto", "image/avif,image/webp,*/*")
    assert avif_too.headers["Vary"] == "Accept"
    assert images.frames_of(ok(avif_too)) == ("WEBP", 6, DURATIONS, 2)
    legacy = get(options_gateway, key, "anim-auto", "image/png,*/*")
    assert legacy.headers["Content-Type"] == "image/gif"
    assert images.frames_of(ok(legacy)) == ("GIF", 6, DURATIONS, 2)
    # A fixed format that cannot animate: the first frame.
    jpeg = get(options_gateway, key, "anim-jpeg")
    assert images.frames_of(ok(jpeg))[:2] == ("JPEG", 1)


def test_animation_over_max_frames_is_its_first_frame(
    options_gateway: GatewayProcess, s3: S3Client
) -> None:
    durations = [50] * 9  # anim keeps at most 8
    key = upload(s3, images.animated("GIF", durations), "gif")
    response = get(options_gateway, key, "anim")
    assert images.frames_of(ok(response))[:2] == ("WEBP", 1)
    assert decode(response.content).size == (60, 40)


def test_animation_over_the_pixel_budget_is_its_first_frame(
    options_gateway: GatewayProcess, s3: S3Client
) -> None:
    # Each frame is within the pixel limit, all five together are not.
    key = upload(s3, images.animated("GIF", [50] * 5, size=(300, 300)), "gif")
    assert MAX_PIXELS < 5 * 300 * 300
    response = get(options_gateway, key, "anim")
    assert images.frames_of(ok(response))[:2] == ("WEBP", 1)
    assert decode(response.content).size == (60, 60)


# --- densities ------------------------------------------------------------------------------


def test_densities(options_gateway: GatewayProcess, s3: S3Client) -> None:
    key = upload(s3, encode(images.marked((800, 400)), "PNG"), "png")
    sizes = {
        name: decode(ok(get(options_gateway, key, name))).size
        for name in ("dense", "dense@1x", "dense@2x", "dense@3x")
    }
    assert sizes == {
        "dense": (100, 100),
        "dense@1x": (100, 100),
        "dense@2x": (200, 200),
        "dense@3x": (300, 300),
    }
    # @1x is the same variant as the plain name; each other density is one of its own.
    etags = {name: get(options_gateway, key, name).headers["ETag"] for name in sizes}
    assert etags["dense"] == etags["dense@1x"]
    assert len(set(etags.values())) == 3
    # As a page's srcset asks for it: anonymous, the '@' as typed.
    anonymous = requests.get(f"{options_gateway.endpoint}/{BUCKET}/{key}?variant=dense@2x")
    assert anonymous.headers["ETag"] == etags["dense@2x"]


def test_densities_capped_at_the_source(options_gateway: GatewayProcess, s3: S3Client) -> None:
    key = upload(s3, encode(images.marked((250, 150), block=40), "PNG"), "png")
    # Its 150 px of height hold a box of 150x150, not 300x300; upscale allows the enlargement.
    assert decode(ok(get(options_gateway, key, "dense@3x"))).size == (150, 150)
    assert decode(ok(get(options_gateway, key, "dense-up@3x"))).size == (300, 300)


@pytest.mark.parametrize(
    ("bucket", "name", "message"),
    [
        (BUCKET, "dense@4x", "There is no variant preset named 'dense@4x'."),
        (BUCKET, "still@2x", "There is no variant preset named 'still@2x'."),
        (LIMITED, "dense@2x", "The variant preset 'dense' is not enabled for bucket"),
    ],
)
def test_densities_refused(
    options_gateway: GatewayProcess, s3: S3Client, bucket: str, name: str, message: str
) -> None:
    key = upload(s3, encode(images.marked((200, 100)), "PNG"), "png", bucket=bucket)
    response = get(options_gateway, key, name, bucket=bucket)
    assert response.status_code == 400
    assert error_code(response) == "InvalidArgument"
    assert message in response.text


def test_eager_presets_render_every_density(options_gateway: GatewayProcess, s3: S3Client) -> None:
    key = upload(s3, encode(images.marked((400, 300)), "PNG"), "png", bucket=EAGER)

    def ready() -> list[str]:
        rows = db_fetch(
            options_gateway.dsn,
            "SELECT d.variant_key FROM derivatives d JOIN objects o USING (version_id)"
            " WHERE o.bucket = $1 AND o.key = $2 AND d.status = 'ready' ORDER BY 1",
            EAGER,
            key,
        )
        return [row["variant_key"].split(":")[0] for row in rows]

    assert wait_for(lambda: ready() == ["eager2x", "eager2x@2x"], 30), ready()
    assert decode(ok(get(options_gateway, key, "eager2x@2x", bucket=EAGER))).size == (80, 80)


# --- quality, progressive, metadata ---------------------------------------------------------


def test_quality_per_format(options_gateway: GatewayProcess, s3: S3Client) -> None:
    key = upload(s3, encode(images.marked((600, 400)).effect_spread(12), "PNG"), "png")

    def size(name: str, accept: str | None) -> int:
        return len(ok(get(options_gateway, key, name, accept)))

    # Each preset's high quality is in one format, its low one in the other.
    assert size("webp-first", "image/webp") > size("jpeg-first", "image/webp")
    assert size("webp-first", None) < size("jpeg-first", None)


def test_progressive_and_kept_metadata(options_gateway: GatewayProcess, s3: S3Client) -> None:
    key = upload(s3, images.jpeg_with_orientation(6), "jpg")
    plain = decode(ok(get(options_gateway, key, "plain")))
    assert plain.info.get("progressive")
    assert "exif" not in plain.info
    camera = decode(ok(get(options_gateway, key, "camera")))
    assert not camera.info.get("progressive")
    exif = camera.getexif()
    assert exif[0x010F] == "Gateway Test Camera"
    # Turned upright, so the orientation tag went with the turn.
    assert camera.size == (100, 200)
    assert exif.get(images.ORIENTATION, 1) == 1
