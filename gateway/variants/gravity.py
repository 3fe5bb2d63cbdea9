"""Where a cover crop keeps its window: a compass point, the most detailed region, the most
salient one, or a focal point named by the object.

Every gravity becomes an anchor, a point of the (oriented) source in fractions of its width and
height; the crop window is centred on it and clamped inside the image (render.plan). A compass
point is a fixed anchor (north: the top edge's middle, which clamping turns into "keep the
top"). ``entropy`` and ``attention`` look at the image, on a copy of at most ANALYSIS_SIDE
pixels a side, so they cost little next to decoding and resizing: a cover crop overflows on one
axis only, so the search is one-dimensional, over every window position along that axis.

- entropy: the window whose greyscale histogram has the highest Shannon entropy (the most
  detailed region; a flat background has almost none).
- attention: a saliency estimate in the manner of libvips' ``attention`` (which imgproxy
  uses): edges (a Laplacian of the luminance, both signs), skin tones (a YCbCr box), and
  saturated colour, weighted and summed; the window with the highest sum wins.

Pure Pillow and deterministic: ties go to the window nearest the centre, so a featureless image
is cropped in the middle, as with ``centre``.
"""

from __future__ import annotations

import array
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal

from PIL import Image, ImageChops, ImageFilter, ImageOps

log = logging.getLogger(__name__)

Gravity = Literal[
    "centre",
    "north",
    "south",
    "east",
    "west",
    "north_east",
    "north_west",
    "south_east",
    "south_west",
    "entropy",
    "attention",
]
Anchor = tuple[float, float]

CENTRE: Anchor = (0.5, 0.5)
COMPASS: Mapping[str, Anchor] = {
    "centre": CENTRE,
    "north": (0.5, 0.0),
    "south": (0.5, 1.0),
    "east": (1.0, 0.5),
    "west": (0.0, 0.5),
    "north_east": (1.0, 0.0),
    "north_west": (0.0, 0.0),
    "south_east": (1.0, 1.0),
    "south_west": (0.0, 1.0),
}
# The user metadata (x-amz-meta-focus) naming an object's focal point: "x,y" in [0, 1].
FOCUS_METADATA = "focus"
# The longest side of the copy the smart gravities analyse: enough to tell a face or a
# detailed patch from a background, small enough to cost a millisecond or two.
ANALYSIS_SIDE = 128
# Attention's weights: edges count fully; skin tones and saturated colour are strong hints of a
# subject (a face, a product) that a textured background lacks.
EDGE_WEIGHT = 1.0
SKIN_WEIGHT = 0.6
SATURATION_WEIGHT = 0.35
# Skin in YCbCr (Chai and Ngan's box), above a minimum luminance (dark noise is not skin).
_SKIN_CB = (77, 127)
_SKIN_CR = (133, 173)
_SKIN_MIN_Y = 40
# Saturation counts from here on (0-255): a grey or washed-out background scores nothing.
_SATURATION_FLOOR = 64


def focal_point(metadata: Mapping[str, str]) -> Anchor | None:
    """The object's focal point from its user metadata, or None (absent or invalid: a bad value
    is ignored, not an error, so a typo never breaks an object's variants)."""
    value = metadata.get(FOCUS_METADATA)
    if value is None:
        return None
    parts = value.split(",")
    try:
        x, y = (float(part) for part in parts)
    except ValueError:
        log.debug("ignoring focus metadata %r: not two numbers x,y", value)
        return None
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):  # NaN fails both
        log.debug("ignoring focus metadata %r: x and y are fractions in [0, 1]", value)
        return None
    return x, y


def anchor(image: Image.Image, gravity: Gravity, window: tuple[float, float]) -> Anchor:
    """The anchor of ``gravity`` for a crop window of ``window`` (its width and height as
    fractions of ``image``'s) of ``image`` (L, LA, RGB or RGBA, oriented)."""
    fixed = COMPASS.get(gravity)
    if fixed is not None:
        return fixed
    horizontal = window[0] < 1.0
    if not horizontal and window[1] >= 1.0:
        return CENTRE  # nothing is cropped
    small = _analysis_copy(image)
    length = small.size[0] if horizontal else small.size[1]
    span = max(1, min(length, round((window[0] if horizontal else window[1]) * length)))
    if gravity == "entropy":
        best = _best_entropy(small.convert("L"), span, horizontal)
    else:
        profile = _attention_profile(small, horizontal)
        best = _best_window(_window_sums(profile, span), length - span)
    centre = (best + span / 2) / length
    return (centre, 0.5) if horizontal else (0.5, centre)


def _analysis_copy(image: Image.Image) -> Image.Image:
    width, height = image.size
    factor = max(1, math.ceil(max(width, height) / ANALYSIS_SIDE))
    # reduce() averages factor x factor blocks: cheap, and exact enough to find a region.
    small = image.reduce(factor) if factor > 1 else image
    if small.mode in ("LA", "RGBA"):
        # Transparent pixels are background, whatever colour lies under them.
        base = Image.new("RGB", small.size, (255, 255, 255))
        base.paste(small.convert("RGBA"), mask=small.getchannel("A"))
        return base
    return small


def _best_entropy(grey: Image.Image, span: int, horizontal: bool) -> int:
    width, height = grey.size
    entropies = []
    for start in range((width if horizontal else height) - span + 1):
        box = (start, 0, start + span, height) if horizontal else (0, start, width, start + span)
        entropies.append(grey.crop(box).entropy())
    return _best_window(entropies, len(entropies) - 1)


def _attention_profile(image: Image.Image, horizontal: bool) -> list[float]:
    """The saliency of each column (or row) of ``image``."""
    rgb = image.convert("RGB")
    luma = rgb.convert("L")
    # FIND_EDGES is a Laplacian clipped at 0: on the image and its negative, both signs count.
    # Pillow leaves a filter's one-pixel frame unfiltered (the pixels as they were): zeroed.
    edges = ImageOps.expand(
        ImageOps.crop(
            ImageChops.add(
                luma.filter(ImageFilter.FIND_EDGES),
                ImageChops.invert(luma).filter(ImageFilter.FIND_EDGES),
            ),
            1,
        ),
        1,
        fill=0,
    )
    y, cb, cr = rgb.convert("YCbCr").split()
    skin = ImageChops.multiply(
        ImageChops.multiply(
            cb.point(lambda v: 255 if _SKIN_CB[0] <= v <= _SKIN_CB[1] else 0),
            cr.point(lambda v: 255 if _SKIN_CR[0] <= v <= _SKIN_CR[1] else 0),
        ),
        y.point(lambda v: 255 if v >= _SKIN_MIN_Y else 0),
    )
    _hue, saturation, value = rgb.convert("HSV").split()
    # Saturation of dark pixels is noise: weighted by brightness.
    saturated = ImageChops.multiply(
        saturation.point(lambda v: v if v >= _SATURATION_FLOOR else 0), value
    )
    profiles = (
        (EDGE_WEIGHT, _profile(edges, horizontal)),
        (SKIN_WEIGHT, _profile(skin, horizontal)),
        (SATURATION_WEIGHT, _profile(saturated, horizontal)),
    )
    length = image.size[0] if horizontal else image.size[1]
    return [sum(weight * values[i] for weight, values in profiles) for i in range(length)]


def _profile(band: Image.Image, horizontal: bool) -> Sequence[float]:
    """The mean of each column (horizontal) or row of an L image, as floats."""
    width, height = band.size
    size = (width, 1) if horizontal else (1, height)
    averaged = band.convert("F").resize(size, Image.Resampling.BOX)
    # Mode F is one native 32-bit float a pixel.
    return array.array("f", averaged.tobytes())


def _window_sums(profile: Sequence[float], span: int) -> list[float]:
    """The sum of every run of ``span`` consecutive values."""
    sums = [sum(profile[:span])]
    for start in range(1, len(profile) - span + 1):
        sums.append(sums[-1] - profile[start - 1] + profile[start + span - 1])
    return sums


def _best_window(scores: Sequence[float], last: int) -> int:
    """The start of the best-scoring window; on a tie (within rounding), the one nearest the
    middle of 0..``last``."""
    top = max(scores)
    tolerance = 1e-9 * max(1.0, abs(top))
    middle = last / 2
    candidates = [start for start, score in enumerate(scores) if score >= top - tolerance]
    return min(candidates, key=lambda start: (abs(start - middle), start))
