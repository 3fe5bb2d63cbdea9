"""gateway.variants.info: what ``?variant=info`` says of a source."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from gateway.variants.info import describe
from gateway.variants.render import ImageTooLarge, RenderLimits, UnsupportedImage
from tests.unit.variants import images
from tests.unit.variants.images import encode

LIMITS = RenderLimits(max_source_bytes=64 * 1024**2, max_source_pixels=100_000_000)


def info(source: bytes) -> dict[str, object]:
    result = describe(source, LIMITS)
    assert (result.format, result.content_type) == ("json", "application/json")
    return json.loads(result.data)


def two_colours(fmt: str) -> bytes:
    """Two thirds red-brown, one third blue: the dominant colour is not the mean."""
    image = Image.new("RGB", (300, 200), (200, 30, 40))
    image.paste((0, 0, 255), (0, 0, 100, 200))
    return encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {}))


def test_jpeg_turned_by_its_orientation() -> None:
    assert info(images.jpeg_with_orientation(6)) == {
        "width": 800,
        "height": 400,
        "format": "jpeg",
        "frames": 1,
        "duration": None,
        "oriented_width": 400,
        "oriented_height": 800,
        "dominant_color": "#0000fe",  # blue, through JPEG's rounding
    }


def test_animated_gif_has_frames_and_duration() -> None:
    described = info(images.animated_gif())
    assert (described["format"], described["frames"], described["duration"]) == ("gif", 2, 0.2)
    assert (described["oriented_width"], described["oriented_height"]) == (40, 40)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_dominant_colour_is_the_largest_area(fmt: str) -> None:
    described = info(two_colours(fmt))
    assert described["dominant_color"] == "#c81e28"
    assert described["format"] == fmt.lower()
    assert (described["width"], described["height"], described["frames"]) == (300, 200, 1)


def test_transparent_pixels_do_not_count() -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    image.paste((10, 200, 30, 255), (0, 0, 30, 30))
    assert info(encode(image, "PNG"))["dominant_color"] == "#0ac81e"


def test_grey_and_sixteen_bit_sources() -> None:
    assert info(encode(Image.new("L", (50, 20), 77), "PNG"))["dominant_color"] == "#4d4d4d"
    assert info(images.sixteen_bit_png())["format"] == "png"


def test_not_an_image() -> None:
    with pytest.raises(UnsupportedImage):
        describe(b"%PDF-1.4 not an image", LIMITS)


def test_limits_hold() -> None:
    with pytest.raises(ImageTooLarge):
        describe(images.png_header_only(20_000, 20_000), LIMITS)
    with pytest.raises(ImageTooLarge):
        describe(two_colours("PNG"), RenderLimits(max_source_bytes=10, max_source_pixels=10**6))
