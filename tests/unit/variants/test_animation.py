"""Animated sources: frame counting without decoding, the frame budget, animated renders."""

from __future__ import annotations

import pytest

from gateway.variants.animation import frames_to_keep, gif_frame_count
from gateway.variants.render import RenderLimits, RenderSpec, render
from tests.unit.variants import images
from tests.unit.variants.images import decode

LIMITS = RenderLimits(max_source_bytes=64 * 1024**2, max_source_pixels=100_000_000)
DURATIONS = [100, 200, 300, 400, 500]


def keep(fmt: str = "webp", **options: object) -> RenderSpec:
    return RenderSpec(60, None, "inside", fmt, 80, animation="keep", **options)  # type: ignore[arg-type]


def test_gif_frames_are_counted_from_blocks() -> None:
    gif = images.animated("GIF", DURATIONS)
    assert gif_frame_count(gif, 100) == 5
    # Counting stops at the limit: a GIF of a million frames costs no more than the limit.
    assert gif_frame_count(gif, 3) == 3
    still = images.encode(images.marked((40, 30)).convert("P"), "GIF")
    assert gif_frame_count(still, 100) == 1
    assert gif_frame_count(b"not a gif", 100) == 0
    # A truncated file: the frames whose descriptors are there.
    assert 1 <= gif_frame_count(gif[: len(gif) // 2], 100) < 5


@pytest.mark.parametrize(
    ("frames", "size", "output", "expected"),
    [
        (10, (100, 100), 50 * 50, 10),
        (1, (100, 100), 50 * 50, 1),  # a still image
        (201, (10, 10), 10, 1),  # more than max_frames
        (200, (1000, 1000), 100, 1),  # source pixels over the limit (200 x 1M > 100M)
        (100, (100, 100), 2_000_000, 1),  # output pixels over the limit
    ],
)
def test_frames_to_keep(frames: int, size: tuple[int, int], output: int, expected: int) -> None:
    assert frames_to_keep(frames, size, output, 200, 100_000_000, 600_000_000) == expected


def test_frames_to_keep_bounds_memory() -> None:
    # Within the pixel limit, but 150 output frames of 1 Mpx held at once need 600 MB.
    assert frames_to_keep(150, (1000, 1000), 1_000_000, 200, 200_000_000, 500_000_000) == 1


@pytest.mark.parametrize("source_format", ["GIF", "WEBP", "PNG"])
def test_animation_kept_as_webp(source_format: str) -> None:
    source = images.animated(source_format, DURATIONS, loop=0)
    result = render(source, keep(), LIMITS)
    assert (result.format, result.frames, result.width, result.height) == ("webp", 5, 60, 40)
    assert images.frames_of(result.data) == ("WEBP", 5, DURATIONS, 0)


def test_animation_for_legacy_clients_is_gif() -> None:
    source = images.animated("WEBP", DURATIONS, loop=3)
    result = render(source, keep("legacy"), LIMITS)
    assert images.frames_of(result.data) == ("GIF", 5, DURATIONS, 3)
    assert result.content_type == "image/gif"


def test_a_gif_that_plays_once_still_plays_once() -> None:
    source = images.animated("GIF", DURATIONS, loop=None)
    assert images.frames_of(render(source, keep(), LIMITS).data)[3] == 1


@pytest.mark.parametrize(
    ("spec", "limits"),
    [
        (keep(), LIMITS),
        (keep(max_frames=4), LIMITS),  # too many frames
        (keep(), RenderLimits(64 * 1024**2, 5 * 120 * 80 - 1)),  # too many pixels
        (keep("jpeg"), LIMITS),  # a format without animation
        (RenderSpec(60, None, "inside", "webp", 80), LIMITS),  # first_frame
    ],
)
def test_otherwise_the_first_frame(spec: RenderSpec, limits: RenderLimits) -> None:
    source = images.animated("GIF", DURATIONS)
    result = render(source, spec, limits)
    expected = 5 if spec == keep() and limits == LIMITS else 1
    assert result.frames == expected
    assert images.frames_of(result.data)[1] == expected
    assert decode(result.data).size == (60, 40)
