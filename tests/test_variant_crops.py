"""Where cover crops land (gravity, x-amz-meta-focus) and ?variant=info, through one live
gateway of this module's own (local profile: neither depends on the storage).

Crops are judged perceptually on synthetic images: a flat grey image with one detailed patch
(its crop is flat, variance near 0, unless it holds the patch), a green one with a skin-toned
disc, and coloured bands at the edges for the compass gravities.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageStat

from tests.conftest import (
    GATEWAY_ENV,
    REPO,
    GatewayProcess,
    S3Client,
    client,
    create_database,
    db_fetch,
    run_gateway,
    wait_for_stored_variants,
)
from tests.test_variants import error_code, image_of, variant, version_of
from tests.unit.variants import images
from tests.unit.variants.images import BLUE, GREY, RED, SKIN, detailed_patch, encode

BUCKET = "crops"
# Allows info alone: the built-in is allowed by name, like any preset.
INFO_ONLY = "crops-info"
# Names every configured preset, and so not info ("*" would include it).
NO_INFO = "crops-noinfo"
GRAVITIES = ["centre", "north", "south", "east", "west", "entropy", "attention"]
PRESETS = {
    f"sq-{gravity}": {
        "width": 100,
        "height": 100,
        "fit": "cover",
        "format": "png",
        "gravity": gravity,
    }
    for gravity in GRAVITIES
}


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str) -> Iterator[GatewayProcess]:
    dsn = create_database(pg_server_dsn)
    buckets = {
        BUCKET: {"variants": ["*"]},
        INFO_ONLY: {"variants": ["info"]},
        NO_INFO: {"variants": list(PRESETS)},
    }
    directory = tmp_path_factory.mktemp("crops") / "gateway"
    with run_gateway(
        directory,
        dsn,
        {},
        GATEWAY_ENV,
        variants=PRESETS,
        buckets=buckets,
        default_bucket_variants=[],
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def s3c(crops: GatewayProcess) -> S3Client:
    return client(crops.endpoint)


def put_png(s3c: S3Client, key: str, image: Image.Image, bucket: str = BUCKET, **kw: Any) -> None:
    s3c.put_object(Bucket=bucket, Key=key, Body=encode(image, "PNG"), ContentType="image/png", **kw)


def crop(gateway: GatewayProcess, key: str, gravity: str) -> Image.Image:
    image = image_of(variant(gateway, BUCKET, key, f"sq-{gravity}"))
    assert image.size == (100, 100)
    return image.convert("RGB")


def variance(image: Image.Image) -> float:
    return ImageStat.Stat(image.convert("L")).var[0]


def skin_share(image: Image.Image) -> float:
    colours = image.getcolors(100 * 100) or []
    near = sum(count for count, colour in colours if images.close_to(colour, SKIN, 12))
    return near / (100 * 100)


# --- gravity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("left", [50, 950])
def test_smart_gravities_keep_the_detailed_patch(
    crops: GatewayProcess, s3c: S3Client, left: int
) -> None:
    key = f"patch-{left}.png"
    put_png(s3c, key, detailed_patch(left=left))
    assert variance(crop(crops, key, "centre")) < 1
    for gravity in ("entropy", "attention"):
        assert variance(crop(crops, key, gravity)) > 40, gravity
    # The side the patch is on keeps it; the other keeps only grey.
    near, far = ("west", "east") if left < 600 else ("east", "west")
    assert variance(crop(crops, key, near)) > 40
    assert variance(crop(crops, key, far)) < 1


def test_attention_keeps_the_face(crops: GatewayProcess, s3c: S3Client) -> None:
    put_png(s3c, "face.png", images.face_and_texture())
    assert skin_share(crop(crops, "face.png", "attention")) > 0.12
    assert skin_share(crop(crops, "face.png", "centre")) == 0


def test_compass_gravities(crops: GatewayProcess, s3c: S3Client) -> None:
    wide = Image.new("RGB", (1200, 400), GREY)
    wide.paste(RED, (0, 0, 100, 400))
    wide.paste(BLUE, (1100, 0, 1200, 400))
    put_png(s3c, "wide.png", wide)
    put_png(s3c, "tall.png", wide.rotate(90, expand=True))  # blue on top, red at the bottom
    assert crop(crops, "wide.png", "west").getpixel((5, 50)) == RED
    assert crop(crops, "wide.png", "east").getpixel((95, 50)) == BLUE
    assert crop(crops, "wide.png", "centre").getpixel((50, 50)) == GREY
    assert crop(crops, "tall.png", "north").getpixel((50, 5)) == BLUE
    assert crop(crops, "tall.png", "south").getpixel((50, 95)) == RED
    # No overflow on the other axis: north of a wide image is its centre.
    assert crop(crops, "wide.png", "north").getpixel((50, 50)) == GREY


def test_focus_metadata_wins(crops: GatewayProcess, s3c: S3Client) -> None:
    image = detailed_patch(left=950)
    image.paste(RED, (0, 0, 100, 400))
    put_png(s3c, "focus.png", image, Metadata={"focus": "0.02,0.5"})
    for gravity in ("centre", "east", "attention"):
        assert crop(crops, "focus.png", gravity).getpixel((5, 50)) == RED, gravity
    # A new version with another focal point is a new derivative, never the old crop.
    put_png(s3c, "focus.png", image, Metadata={"focus": "0.5,0.5"})
    assert crop(crops, "focus.png", "attention").getpixel((50, 50)) == GREY
    # A value that is no focal point is ignored: the gravity decides.
    put_png(s3c, "focus.png", image, Metadata={"focus": "left"})
    assert variance(crop(crops, "focus.png", "attention")) > 40
    assert crop(crops, "focus.png", "centre").getpixel((50, 50)) == GREY


# --- ?variant=info ----------------------------------------------------------------------------


def info(gateway: GatewayProcess, key: str, bucket: str = BUCKET) -> requests.Response:
    response = variant(gateway, bucket, key, "info")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response


def test_info_of_a_turned_jpeg(crops: GatewayProcess, s3c: S3Client) -> None:
    s3c.put_object(
        Bucket=BUCKET,
        Key="turned.jpg",
        Body=images.jpeg_with_orientation(6),
        ContentType="image/jpeg",
        CacheControl="public, max-age=600",
    )
    first = info(crops, "turned.jpg")
    assert first.json() == {
        "width": 800,
        "height": 400,
        "format": "jpeg",
        "frames": 1,
        "duration": None,
        "oriented_width": 400,
        "oriented_height": 800,
        "dominant_color": "#0000fe",
    }
    assert first.headers["Cache-Control"] == "public, max-age=600"
    assert "Vary" not in first.headers
    # Stored as a derivative: made once, then served with the same ETag.
    wait_for_stored_variants(crops.dsn)
    rows = db_fetch(
        crops.dsn,
        "SELECT variant_key, status FROM derivatives WHERE version_id = $1",
        version_of(crops.dsn, BUCKET, "turned.jpg"),
    )
    assert [(row["variant_key"].split(":")[:2], row["status"]) for row in rows] == [
        (["info", "json"], "ready")
    ]
    again = info(crops, "turned.jpg")
    assert (again.content, again.headers["ETag"]) == (first.content, first.headers["ETag"])
    head = variant(crops, BUCKET, "turned.jpg", "info", method="HEAD")
    assert head.headers["ETag"] == first.headers["ETag"]
    assert int(head.headers["Content-Length"]) == len(first.content)
    cached = variant(crops, BUCKET, "turned.jpg", "info", {"If-None-Match": first.headers["ETag"]})
    assert cached.status_code == 304


def test_info_of_an_animation_and_a_png(crops: GatewayProcess, s3c: S3Client) -> None:
    s3c.put_object(Bucket=INFO_ONLY, Key="anim.gif", Body=images.animated_gif())
    described = info(crops, "anim.gif", INFO_ONLY).json()
    assert (described["format"], described["frames"], described["duration"]) == ("gif", 2, 0.2)
    # Two thirds of the picture are one colour: that one, not the mean.
    picture = Image.new("RGB", (300, 200), (200, 30, 40))
    picture.paste(BLUE, (0, 0, 100, 200))
    put_png(s3c, "two.png", picture, bucket=INFO_ONLY)
    described = info(crops, "two.png", INFO_ONLY).json()
    assert described["dominant_color"] == "#c81e28"
    assert (described["oriented_width"], described["oriented_height"]) == (300, 200)


def test_info_is_allowed_per_bucket_and_refuses_what_is_no_image(
    crops: GatewayProcess, s3c: S3Client
) -> None:
    put_png(s3c, "a.png", Image.new("RGB", (10, 10), RED), bucket=NO_INFO)
    refused = variant(crops, NO_INFO, "a.png", "info")
    assert (refused.status_code, error_code(refused)) == (400, "InvalidArgument")
    # A bucket that allows only info has no other preset.
    put_png(s3c, "b.png", Image.new("RGB", (10, 10), RED), bucket=INFO_ONLY)
    refused = variant(crops, INFO_ONLY, "b.png", "sq-centre")
    assert (refused.status_code, error_code(refused)) == (400, "InvalidArgument")
    s3c.put_object(Bucket=BUCKET, Key="notes.txt", Body=b"not an image", ContentType="text/plain")
    for _ in range(2):  # the recorded failure answers the same
        response = variant(crops, BUCKET, "notes.txt", "info")
        assert (response.status_code, error_code(response)) == (400, "UnsupportedImage")


# --- configuration ----------------------------------------------------------------------------


def test_check_config_names_the_bad_gravity(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        json.dumps(
            {
                "variants": {
                    "ok": {"width": 9, "height": 9, "fit": "cover", "gravity": "north_east"},
                    "bad": {"width": 9, "height": 9, "fit": "contain", "gravity": "entropy"},
                }
            }
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        f"{path}: variants.bad: gravity entropy applies to fit cover only, not contain"
        in result.stderr
    )
