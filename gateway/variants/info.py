"""``?variant=info``: what a page needs to know of an image before it loads it.

Its size (stored, and as displayed once its EXIF orientation is applied), format, frame count,
duration, and dominant colour: enough to reserve the layout space and paint a placeholder. It
runs in the render workers like a render, within the same limits (the header is read first;
the pixel and memory limits hold before anything is decoded), and is stored as a derivative
like one, so it is worked out once per object version.

A video's facts come from ffprobe (its container's declared duration and frame count, within
the probe limits) and its first frame that is not black, as a poster preset without a
position takes it (gateway.variants.video): that frame gives the size, already turned as a
player shows it, and the colour.

The dominant colour comes from a tiny decode (a JPEG at 1/8 scale), reduced to at most
DOMINANT_SIDE pixels a side and quantised (median cut, a deterministic split of the colour
space) into a few colours: the one covering the most opaque pixels wins. Not the mean colour,
which for half red, half blue would be a purple no pixel has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from gateway.variants.render import (
    INPUT_FORMATS,
    TRANSPOSED,
    InvalidImage,
    Rendered,
    RenderLimits,
    check_memory,
    decode_sixteen_bits_as_eight,
    open_image,
    orientation_of,
    working_mode,
)
from gateway.variants.video import VideoFacts

DOMINANT_SIDE = 64
DOMINANT_COLOURS = 8
# Pillow's format names, as the answer spells them (a camera's MPO is a JPEG to a browser).
_FORMATS = {"MPO": "jpeg"}


@dataclass(frozen=True)
class InfoSpec:
    """What ``?variant=info`` makes: always JSON."""

    format: Literal["json"] = "json"


def describe(
    source: bytes,
    limits: RenderLimits,
    formats: tuple[str, ...] = INPUT_FORMATS,
    video: VideoFacts | None = None,
) -> Rendered:
    """The JSON description of ``source``, an image, or a video's frame (as PPM) and ``video``
    its facts. Raises RenderError subclasses, as render does."""
    with open_image(source, limits, formats) as image:
        width, height = image.size
        name = image.format or ""
        if name not in ("JPEG", "MPO"):
            decode_sixteen_bits_as_eight(image)
            check_memory(image, limits, orientation=1)
        orientation = orientation_of(image)
        try:
            frames = getattr(image, "n_frames", 1)
            duration = _duration(image, frames)
            colour = _dominant_colour(image, limits)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImage(f"The image could not be decoded: {exc}") from None
    oriented_width, oriented_height = (
        (height, width) if orientation in TRANSPOSED else (width, height)
    )
    info = {
        "width": width,
        "height": height,
        "format": video.format if video else _FORMATS.get(name, name.lower()),
        "frames": video.frames if video else frames,
        "duration": video.duration if video else duration,
        "oriented_width": oriented_width,
        "oriented_height": oriented_height,
        "dominant_color": colour,
    }
    data = json.dumps(info, separators=(",", ":")).encode()
    return Rendered(data, "json", oriented_width, oriented_height)


def _duration(image: Image.Image, frames: int) -> float | None:
    """An animation's length in seconds (the sum of its frames' durations); None for a still
    image. Leaves the image on its first frame."""
    if frames <= 1:
        return None
    total = 0.0
    for index in range(frames):
        image.seek(index)
        value = image.info.get("duration", 0)
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            total += value
    image.seek(0)
    return round(total / 1000, 3)


def _dominant_colour(image: Image.Image, limits: RenderLimits) -> str:
    if image.format in ("JPEG", "MPO"):
        image.draft(image.mode, (DOMINANT_SIDE, DOMINANT_SIDE))
        check_memory(image, limits, orientation=1)
    image.load()
    working, _icc = working_mode(image, image.info.get("icc_profile"))
    factor = max(1, math.ceil(max(working.size) / DOMINANT_SIDE))
    small = working.reduce(factor) if factor > 1 else working
    rgba = small.convert("RGBA")
    quantised = rgba.convert("RGB").quantize(DOMINANT_COLOURS, Image.Quantize.MEDIANCUT)
    opaque = rgba.getchannel("A").point(lambda alpha: 255 if alpha else 0)
    counts = quantised.histogram(mask=opaque)
    if not any(counts):
        counts = quantised.histogram()  # nothing opaque: the colour under the transparency
    palette = quantised.getpalette() or []
    best = max(range(len(counts)), key=lambda index: (counts[index], -index))
    red, green, blue = palette[3 * best : 3 * best + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"
