"""Where a cover crop lands: focal points, compass gravities, entropy and attention."""

from __future__ import annotations

import math

import pytest
from PIL import Image, ImageStat

from gateway.variants.gravity import anchor, focal_point
from gateway.variants.render import RenderLimits, RenderSpec, plan, render
from tests.unit.variants.images import (
    GREY,
    SKIN,
    decode,
    detailed_patch,
    encode,
    face_and_texture,
    noise,
)

LIMITS = RenderLimits(max_source_bytes=64 * 1024**2, max_source_pixels=100_000_000)


def cropped(image: Image.Image, gravity: str, focus: tuple[float, float] | None = None) -> Image:
    spec = RenderSpec(100, 100, "cover", "png", 80, gravity=gravity)  # type: ignore[arg-type]
    return decode(render(encode(image, "PNG"), spec, LIMITS, focus).data)


def variance(image: Image.Image) -> float:
    return ImageStat.Stat(image.convert("L")).var[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.32,0.41", (0.32, 0.41)),
        (" 0 , 1 ", (0.0, 1.0)),
        ("1,0", (1.0, 0.0)),
        ("0.5", None),
        ("0.1,0.2,0.3", None),
        ("a,b", None),
        ("1.5,0.5", None),
        ("0.5,-0.1", None),
        ("nan,0.5", None),
        ("inf,0.5", None),
        ("", None),
    ],
)
def test_focal_point_from_metadata(value: str, expected: tuple[float, float] | None) -> None:
    assert focal_point({"focus": value}) == expected


def test_no_focus_metadata() -> None:
    assert focal_point({"other": "0.5,0.5"}) is None


@pytest.mark.parametrize(
    ("centre", "box"),
    [
        ((0.5, 0.5), (400.0, 0.0, 800.0, 400.0)),
        ((0.0, 0.5), (0.0, 0.0, 400.0, 400.0)),
        ((1.0, 0.0), (800.0, 0.0, 1200.0, 400.0)),
        ((0.25, 0.9), (100.0, 0.0, 500.0, 400.0)),  # the overflowing side only moves
        ((0.05, 0.5), (0.0, 0.0, 400.0, 400.0)),  # clamped inside the image
    ],
)
def test_cover_window_is_centred_on_the_anchor_and_clamped(
    centre: tuple[float, float], box: tuple[float, float, float, float]
) -> None:
    spec = RenderSpec(100, 100, "cover", "png", 80)
    assert plan((1200, 400), spec, centre).box == box


def test_centre_plan_is_the_plain_centre_crop() -> None:
    spec = RenderSpec(97, 61, "cover", "png", 80)
    for source in [(1201, 397), (333, 1000), (4000, 3000)]:
        sw, sh = source
        box = plan(source, spec).box
        assert math.isclose(box[0], sw - box[2]) and math.isclose(box[1], sh - box[3])


@pytest.mark.parametrize(
    ("gravity", "expected"),
    [("north", (0.5, 0.0)), ("south_west", (0.0, 1.0)), ("centre", (0.5, 0.5))],
)
def test_compass_anchors(gravity: str, expected: tuple[float, float]) -> None:
    image = Image.new("RGB", (10, 10))
    assert anchor(image, gravity, (0.5, 1.0)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("gravity", ["entropy", "attention"])
def test_a_featureless_image_is_cropped_in_the_middle(gravity: str) -> None:
    image = Image.new("RGB", (1200, 400), GREY)
    assert anchor(image, gravity, (1 / 3, 1.0)) == pytest.approx((0.5, 0.5), abs=0.01)  # type: ignore[arg-type]


@pytest.mark.parametrize("gravity", ["entropy", "attention"])
@pytest.mark.parametrize("left", [50, 950])
def test_smart_gravity_finds_the_detailed_region(gravity: str, left: int) -> None:
    image = detailed_patch(left=left)
    out = cropped(image, gravity)
    assert out.size == (100, 100)
    # The patch is 200 pixels of a 400-pixel window: half the crop is noise (smoothed by the
    # fourfold downscale), the rest flat.
    assert variance(out) > 40
    assert variance(cropped(image, "centre")) < 1


def test_smart_gravity_works_vertically() -> None:
    image = detailed_patch(size=(1200, 400), left=500).rotate(90, expand=True)  # 400 x 1200
    assert variance(cropped(image, "entropy")) > 40
    assert variance(cropped(image, "attention")) > 40


def skin_share(image: Image.Image) -> float:
    width, height = image.size
    colours = image.convert("RGB").getcolors(width * height) or []
    near = sum(
        count
        for count, colour in colours
        if all(abs(c - s) <= 12 for c, s in zip(colour, SKIN, strict=True))
    )
    return near / (width * height)


def test_attention_prefers_skin_to_texture() -> None:
    image = face_and_texture()
    # The whole disc is in the window (a sixth of its area).
    assert skin_share(cropped(image, "attention")) > 0.12
    assert skin_share(cropped(image, "centre")) == 0


def test_transparent_pixels_are_background() -> None:
    image = Image.new("RGBA", (1200, 400), (0, 0, 0, 0))
    # Hidden detail under full transparency, visible detail at the right.
    image.paste(noise((200, 200)).convert("RGBA"), (50, 100))
    image.putalpha(Image.new("L", (1200, 400), 0))
    image.paste(noise((200, 200)).convert("RGBA"), (950, 100))
    assert anchor(image, "attention", (1 / 3, 1.0))[0] > 0.6


@pytest.mark.parametrize("gravity", ["centre", "north", "entropy", "attention"])
def test_focus_wins_over_gravity(gravity: str) -> None:
    image = detailed_patch(left=950)
    image.paste((255, 0, 0), (0, 0, 100, 400))
    out = cropped(image, gravity, focus=(0.0, 0.5))
    assert out.convert("RGB").getpixel((5, 50)) == (255, 0, 0)


def test_compass_gravities_land_on_their_side() -> None:
    image = Image.new("RGB", (1200, 400), GREY)
    image.paste((255, 0, 0), (0, 0, 100, 400))
    image.paste((0, 0, 255), (1100, 0, 1200, 400))
    assert cropped(image, "west").getpixel((5, 50)) == (255, 0, 0)
    assert cropped(image, "east").getpixel((95, 50)) == (0, 0, 255)
    tall = image.rotate(90, expand=True)  # red at the bottom, blue at the top
    assert cropped(tall, "north").getpixel((50, 5)) == (0, 0, 255)
    assert cropped(tall, "south").getpixel((50, 95)) == (255, 0, 0)
