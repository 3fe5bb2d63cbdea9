"""Render one image variant: source bytes in, encoded bytes out. Pure Pillow, no I/O.

This runs in worker processes (gateway.variants.pool), so everything crossing the boundary
(specs, limits, results, errors) is small and picklable, and nothing here imports the gateway
but its pure siblings: gravity (where a cover crop keeps its window) and animation (how
many frames an animation may keep).

Order of work, cheapest first: the byte size; the header (format, dimensions: the pixel limit
is enforced before a single pixel is decoded, and so is the memory the decoded pixels and one
working copy would take, against the worker's limit; 16-bit grey PNGs are set to decode
straight to 8 bits); JPEG DCT scaling (``draft``: decode at 1/2, 1/4 or 1/8 when the target
is that much smaller); EXIF orientation; colour (CMYK through its ICC profile to sRGB,
palettes and 16-bit greys to 8 bits); the resize (``reducing_gap``: a cheap integer ``reduce``
first, then a Lanczos pass); the encode, with the ICC profile kept and all other metadata
(EXIF, XMP, comments) dropped unless the preset keeps them.

An animated source (GIF, WebP, APNG) of a preset that keeps animation is rendered frame by
frame, each frame shaped as a still image would be, into an animated WebP (or GIF, for clients
that take neither WebP nor AVIF), its frame durations and loop count kept; how many frames it
may have is settled before one is decoded (gateway.variants.animation). A ``density`` above 1
multiplies the preset's box, capped at what the source holds unless the preset may upscale.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from typing import Literal

from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from gateway.variants.animation import ANIMATED_FORMATS, frames_to_keep, gif_frame_count
from gateway.variants.gravity import CENTRE, Anchor, Gravity, anchor

Fit = Literal["cover", "contain", "inside", "fill"]
Animation = Literal["first_frame", "keep"]
# "legacy" is what every client decodes: JPEG, or PNG when the image has transparency (GIF
# for a kept animation).
OutputFormat = Literal["jpeg", "png", "webp", "avif", "legacy"]
EncodedFormat = Literal["jpeg", "png", "webp", "avif", "gif"]
# What a derivative holds: an image, or a source's description (gateway.variants.info).
DerivativeFormat = EncodedFormat | Literal["json"]

CONTENT_TYPES: dict[DerivativeFormat, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "gif": "image/gif",
    "json": "application/json",
}
# Decoders a source may use. Every other Pillow plugin is refused: each decoder is attack
# surface, and these cover the images of the web. (Camera JPEGs with a second frame, MPO, are
# opened by the JPEG plugin.)
INPUT_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP")
# resize(reducing_gap=...): first reduce() by an integer factor while the image stays at least
# this many times the target, then resample. 2.0 is Pillow's own choice for thumbnail().
REDUCING_GAP = 2.0
# Largest side each encoder accepts.
MAX_SIDE: dict[EncodedFormat, int] = {
    "jpeg": 65_535,
    "png": 2**31 - 1,
    "webp": 16_383,
    "avif": 65_536,
    "gif": 65_535,
}
_ORIENTATION_TAG = 0x0112
# EXIF orientations 5-8 turn the image a quarter: stored width is displayed height.
TRANSPOSED = frozenset({5, 6, 7, 8})
# How each EXIF orientation is undone (what ImageOps.exif_transpose does to one image).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# The modes rendering works in; any other is converted (a full-size copy) first.
_WORKING_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
# PNG's 16-bit grey rawmodes, and the ones that read only their high bytes.
_EIGHT_BIT_RAWMODES = {"I;16B": "L;16B", "I;16": "L;16"}


class RenderError(Exception):
    """A source that cannot be rendered; the message says why, for the client."""


class UnsupportedImage(RenderError):
    """Not an image in one of INPUT_FORMATS."""


class InvalidImage(RenderError):
    """An image that cannot be decoded (truncated, corrupt) or encoded."""


class ImageTooLarge(RenderError):
    """More bytes or pixels than the limits allow."""


class RenderTimeout(RenderError):
    """The render ran (or waited for a worker) longer than allowed."""


class VideoUnsupported(RenderError):
    """A poster of a video was asked of a gateway that cannot run ffmpeg."""


@dataclass(frozen=True)
class FrameSpec:
    """Which still of a video to render: at ``seconds``, at ``percent`` of its duration, or
    (both None) the first frame that is not black."""

    seconds: float | None = None
    percent: float | None = None


@dataclass(frozen=True)
class RenderSpec:
    """What to make of a source. ``width``/``height`` None: unconstrained (fit inside only)."""

    width: int | None
    height: int | None
    fit: Fit
    format: OutputFormat
    quality: int
    # Behind transparent pixels in a JPEG and around a contained image; None: white, or
    # transparent around a contained image that has transparency.
    background: tuple[int, int, int] | None = None
    # Which part of the source a cover crop keeps (gateway.variants.gravity).
    gravity: Gravity = "centre"
    # A poster preset: a video source is rendered as this frame of it.
    frame: FrameSpec | None = None
    # Encoder quality by format where it differs from ``quality`` (sorted pairs).
    qualities: tuple[tuple[EncodedFormat, int], ...] = ()
    # False: the source's EXIF (orientation applied, so without it) and XMP are kept.
    strip_metadata: bool = True
    progressive: bool = True
    # libavif's speed, 0 (slowest, smallest) to 10.
    avif_speed: int = 8
    animation: Animation = "first_frame"
    max_frames: int = 200
    # The box multiplied by this (an @2x variant); capped at the source unless ``upscale``.
    density: int = 1
    upscale: bool = False

    def quality_for(self, encoded: EncodedFormat) -> int:
        return dict(self.qualities).get(encoded, self.quality)


# RenderSpec fields added after the first release, with the values that render what a spec
# without them always did: a spec hash leaves them out at these values, so existing variants
# keep their keys.
NEUTRAL_OPTIONS: dict[str, object] = {
    "qualities": (),
    "strip_metadata": True,
    "progressive": True,
    "avif_speed": 8,
    "animation": "first_frame",
    "max_frames": 200,
    "density": 1,
    "upscale": False,
    "frame": None,
}


# Memory a render worker needs besides the pixels: the interpreter and codecs, the source's
# bytes (up to max_source_bytes, at most twice), the encoder's output.
MEMORY_OVERHEAD = 256 * 1024**2
# The default memory of a worker, per pixel of the pixel limit: the largest image allowed,
# decoded at 4 bytes a pixel, and a working copy half that size (a conversion from a palette,
# an EXIF turn of a drafted JPEG, the reduced image).
MEMORY_PER_PIXEL = 6
# Pillow keeps a pointer to every row: a tall, narrow image costs far more than its pixels.
ROW_OVERHEAD = 8
# Bytes a pixel takes in Pillow's memory, by mode (RGB is stored in 4 bytes like RGBA).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def default_memory_bytes(max_pixels: int) -> int:
    """The memory a render worker may use by default, for a pixel limit of ``max_pixels``."""
    return MEMORY_OVERHEAD + MEMORY_PER_PIXEL * max_pixels


@dataclass(frozen=True)
class VideoLimits:
    """How posters are made of videos: the programs, and what one ffmpeg run may cost."""

    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    max_source_bytes: int = 1024**3
    max_seek_seconds: float = 300.0
    probe_bytes: int = 5 * 1024**2
    probe_seconds: float = 5.0
    memory_bytes: int = 1024**3


@dataclass(frozen=True)
class RenderLimits:
    max_source_bytes: int
    max_source_pixels: int
    # The most memory (data) a render worker may use; None: default_memory_bytes.
    max_memory_bytes: int | None = None
    video: VideoLimits = VideoLimits()

    @property
    def memory_bytes(self) -> int:
        if self.max_memory_bytes is not None:
            return self.max_memory_bytes
        return default_memory_bytes(self.max_source_pixels)

    @property
    def pixel_memory_bytes(self) -> int:
        """What the pixels of one render may take: the worker's memory less its overhead."""
        return max(0, self.memory_bytes - MEMORY_OVERHEAD)


@dataclass(frozen=True)
class Rendered:
    data: bytes
    format: DerivativeFormat
    width: int
    height: int
    frames: int = 1

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclass(frozen=True)
class Plan:
    """How a source of some size becomes the output: scale ``box`` (a region of the source)
    to ``size``, and place it in the middle of ``canvas``."""

    box: tuple[float, float, float, float]
    size: tuple[int, int]
    canvas: tuple[int, int]
    # The size the whole source is scaled to (larger than ``size`` when ``box`` crops).
    full: tuple[int, int]


def plan(source: tuple[int, int], spec: RenderSpec, centre: Anchor = CENTRE) -> Plan:
    """The geometry of ``spec.fit`` for a source of ``source`` pixels (already oriented); a
    cover crop's window is centred on ``centre`` (fractions of the source) and kept inside."""
    sw, sh = source
    whole = (0.0, 0.0, float(sw), float(sh))
    if spec.fit == "fill":
        assert spec.width is not None and spec.height is not None
        target = (spec.width, spec.height)
        return Plan(whole, target, target, target)
    if spec.fit == "inside":
        scales = [
            limit / side
            for limit, side in ((spec.width, sw), (spec.height, sh))
            if limit is not None
        ]
        # Never enlarged: a preview of a small image is the small image.
        scale = min(1.0, *scales)
        size = _scaled(source, scale)
        return Plan(whole, size, size, size)
    assert spec.width is not None and spec.height is not None
    tw, th = spec.width, spec.height
    if spec.fit == "contain":
        size = _scaled(source, min(tw / sw, th / sh))
        return Plan(whole, size, (tw, th), size)
    # cover: scale so both sides reach the box, then keep a window of the overflowing side.
    scale = max(tw / sw, th / sh)
    crop_w, crop_h = min(sw, tw / scale), min(sh, th / scale)
    left = _clamp(centre[0] * sw - crop_w / 2, sw - crop_w)
    top = _clamp(centre[1] * sh - crop_h / 2, sh - crop_h)
    return Plan(
        (left, top, left + crop_w, top + crop_h), (tw, th), (tw, th), _scaled(source, scale)
    )


def _clamp(start: float, last: float) -> float:
    return min(max(start, 0.0), last)


def at_density(spec: RenderSpec, source: tuple[int, int]) -> RenderSpec:
    """``spec`` with its box multiplied by its density, for a source of ``source`` pixels
    (oriented). Without ``upscale``, the box grows only as far as the source's pixels reach
    (keeping its aspect ratio), and never shrinks below the 1x box: an @2x of a small source
    is the largest image the source holds, not an enlargement."""
    if spec.density == 1:
        return spec
    factor = float(spec.density)
    if not spec.upscale and spec.fit != "inside":  # inside never enlarges at all
        assert spec.width is not None and spec.height is not None
        sw, sh = source
        if spec.fit == "contain":
            one = min(spec.width / sw, spec.height / sh)
        else:  # cover, and fill (neither side enlarged)
            one = max(spec.width / sw, spec.height / sh)
        factor = max(1.0, min(factor, 1 / one))
    width = round(spec.width * factor) if spec.width is not None else None
    height = round(spec.height * factor) if spec.height is not None else None
    return replace(spec, width=width, height=height, density=1)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def render(
    source: bytes,
    spec: RenderSpec,
    limits: RenderLimits,
    focus: Anchor | None = None,
    formats: tuple[str, ...] = INPUT_FORMATS,
) -> Rendered:
    """Render ``source`` as ``spec`` says; ``focus``, the object's focal point, places a cover
    crop whatever the gravity. Raises RenderError subclasses, never anything else for a bad
    source (a MemoryError or a Pillow bug still propagates: that is a crash). ``formats``: the
    decoders allowed (a video's frame comes from ffmpeg as PPM)."""
    with open_image(source, limits, formats) as image:
        frames = _frames(image, source, spec, limits)
        if frames > 1:
            return _render_animation(image, frames, spec, focus)
        if image.format not in ("JPEG", "MPO"):
            # Asking a PNG for its EXIF block decodes it: what decoding costs is settled first.
            decode_sixteen_bits_as_eight(image)
            check_memory(image, limits, orientation=1)
        orientation = orientation_of(image)
        spec = at_density(spec, _oriented(image.size, orientation))
        _draft(image, spec, orientation)
        check_memory(image, limits, orientation)
        try:
            image.load()
            # In place: no copy of the decoded pixels when there is nothing to turn.
            ImageOps.exif_transpose(image, in_place=True)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImage(f"The image could not be decoded: {exc}") from None
        kept = _kept_metadata(image, spec)
        working, icc = working_mode(image, image.info.get("icc_profile"))
        shaped = _shape(working, spec, focus)
        return _encode(shaped, spec, icc, kept)


def _oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in TRANSPOSED else size


def _frames(image: Image.Image, source: bytes, spec: RenderSpec, limits: RenderLimits) -> int:
    """The frames to render: more than 1 only for an animation the preset keeps, in a format
    that can hold one, within its frame and pixel budget."""
    if spec.animation != "keep" or spec.format not in ("webp", "legacy"):
        return 1
    if image.format not in ANIMATED_FORMATS:
        return 1
    if image.format == "GIF":
        count = gif_frame_count(source, spec.max_frames + 1)
    else:
        # WebP's demuxer and APNG's acTL chunk declare it: nothing is decoded.
        count = getattr(image, "n_frames", 1)
    width, height = image.size
    # One output frame, at most: the whole box of the density, or the source itself (inside
    # never enlarges).
    box = at_density(replace(spec, upscale=True), image.size)
    if spec.fit == "inside":
        output = width * height
    else:
        assert box.width is not None and box.height is not None
        output = box.width * box.height
    return frames_to_keep(
        count,
        image.size,
        output,
        spec.max_frames,
        limits.max_source_pixels,
        limits.pixel_memory_bytes,
    )


def _render_animation(
    image: Image.Image, count: int, spec: RenderSpec, focus: Anchor | None
) -> Rendered:
    orientation = orientation_of(image)
    spec = at_density(spec, _oriented(image.size, orientation))
    kept = _kept_metadata(image, spec)
    # GIF: absent means "play once"; WebP and APNG always say (0: forever).
    loop = image.info.get("loop")
    icc = image.info.get("icc_profile")
    frames: list[Image.Image] = []
    durations: list[int] = []
    frame_icc: bytes | None = None
    try:
        for index in range(count):
            image.seek(index)
            image.load()
            # Each frame is composited on the ones before (disposal, blending), so every
            # output frame is whole; the encoder finds what changed.
            durations.append(round(image.info.get("duration", 0) or 0))
            frame, frame_icc = working_mode(image, icc)
            if orientation != 1:
                frame = frame.transpose(_TRANSPOSE[orientation])
            if index == 0:
                # One crop for every frame, found in the first: a crop that followed each
                # frame's content would jump about.
                focus = _cover_centre(frame, spec, focus)
            shaped = _shape(frame, spec, focus)
            # The next seek overwrites the source's pixels: a frame kept as is is copied.
            frames.append(shaped.copy() if shaped is image else shaped)
    except EOFError:
        pass  # fewer frames than counted (a truncated file): those decoded are the animation
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"The image could not be decoded: {exc}") from None
    if not frames:
        raise InvalidImage("The animation has no frame that could be decoded.")
    return _encode_animation(frames, durations, loop, spec, frame_icc, kept)


def _kept_metadata(image: Image.Image, spec: RenderSpec) -> dict[str, bytes]:
    """The EXIF and XMP blocks a preset with ``strip_metadata: false`` writes (the EXIF
    orientation was applied to the pixels, and exif_transpose took it out of the block)."""
    if spec.strip_metadata:
        return {}
    kept: dict[str, bytes] = {}
    for name in ("exif", "xmp"):
        value = image.info.get(name)
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes) and value:
            kept[name] = value
    return kept


def open_image(
    source: bytes, limits: RenderLimits, formats: tuple[str, ...] = INPUT_FORMATS
) -> Image.Image:
    """``source``'s header read, within the byte and pixel limits; no pixel decoded yet."""
    if len(source) > limits.max_source_bytes:
        raise ImageTooLarge(
            f"The image is {len(source)} bytes; variants are made of images up to "
            f"{limits.max_source_bytes} bytes."
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; ours is checked just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source), formats=_input_formats(formats))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"The image has too many pixels: {exc}") from None
    except UnidentifiedImageError:
        raise UnsupportedImage(
            "The object is not an image variants can be made of "
            "(JPEG, PNG, GIF, WebP, AVIF, TIFF or BMP)."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"The image header could not be read: {exc}") from None
    width, height = image.size
    if width * height > limits.max_source_pixels:
        image.close()
        raise ImageTooLarge(
            f"The image is {width}x{height} pixels; variants are made of images of up to "
            f"{limits.max_source_pixels} pixels."
        )
    if width < 1 or height < 1:
        image.close()
        raise InvalidImage(f"The image declares no pixels ({width}x{height}).")
    return image


def decode_sixteen_bits_as_eight(image: Image.Image) -> None:
    """Let a 16-bit grey PNG decode straight to 8 bits a pixel (the high byte of each sample):
    a third of the memory of decoding 16 bits and scaling them down afterwards."""
    if not isinstance(image, ImageFile.ImageFile):
        return  # (tiles belong to images read from a file)
    if image.format != "PNG" or image.mode != "I;16" or "transparency" in image.info:
        return  # (a tRNS key is a 16-bit value: left to the general path)
    if not all(
        tile.codec_name == "zip" and isinstance(tile.args, str) and tile.args in _EIGHT_BIT_RAWMODES
        for tile in image.tile
    ):
        return
    image.tile = [tile._replace(args=_EIGHT_BIT_RAWMODES[str(tile.args)]) for tile in image.tile]
    # What JPEG's draft() does to decode to another mode: the decoder follows image.mode.
    image._mode = "L"


def check_memory(image: Image.Image, limits: RenderLimits, orientation: int) -> None:
    """Refuse, before decoding, an image whose pixels would take more memory than a render
    may use: decoded (Pillow's pointer per row included, so a 1 x 100,000,000 image costs what
    it really does), plus a full-size copy if it must be turned or converted."""
    decoded = _pixel_bytes(image.size, image.mode)
    copied = orientation != 1 or image.mode not in _WORKING_MODES or "transparency" in image.info
    needed = decoded + (_pixel_bytes(image.size, "RGBA") if copied else 0)
    if needed > limits.pixel_memory_bytes:
        width, height = image.size
        raise ImageTooLarge(
            f"The image ({width}x{height} pixels, {image.mode}) would need "
            f"{needed // 1024**2} MiB to render; a render may use "
            f"{limits.pixel_memory_bytes // 1024**2} MiB for pixels."
        )


def _pixel_bytes(size: tuple[int, int], mode: str) -> int:
    width, height = size
    return height * (width * _PIXEL_BYTES.get(mode, 4) + ROW_OVERHEAD)


def _input_formats(formats: tuple[str, ...]) -> list[str]:
    # Image.open refuses a format whose plugin is absent (AVIF needs a Pillow built with it).
    Image.init()
    return [name for name in formats if name in Image.OPEN]


def orientation_of(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except RenderError:
        raise  # a timeout's alarm, not the EXIF block
    except Exception:  # a broken EXIF block only loses the orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _draft(image: Image.Image, spec: RenderSpec, orientation: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the output allows (no-op otherwise).

    ``draft`` picks the smallest scale still at least the requested size, which is the whole
    source scaled as the plan says, in stored (not displayed) orientation.
    """
    if image.format not in ("JPEG", "MPO"):
        return  # draft is a no-op for other formats; skip the work of planning
    width, height = image.size
    if orientation in TRANSPOSED:
        width, height = height, width
    full_w, full_h = plan((width, height), spec).full
    if orientation in TRANSPOSED:
        full_w, full_h = full_h, full_w
    image.draft(image.mode, (full_w, full_h))


def working_mode(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """The image as L, LA, RGB or RGBA (8 bits a channel), and the ICC profile that still
    describes it (None once the pixels have been converted to sRGB, or if none matches)."""
    mode = image.mode
    has_transparency = "transparency" in image.info
    if mode == "CMYK":
        return _cmyk_to_srgb(image, icc), None
    if mode in _SIXTEEN_BIT:
        # convert("L") would clip every value above 255 instead of scaling 16 bits to 8. Scaled
        # in the image's own mode: no 32-bit copy on the way (a 16-bit grey PNG never gets
        # here, it was decoded to 8 bits).
        image = image.point(lambda value: value * (1 / 257)).convert("L")
    elif mode == "F":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if has_transparency or mode == "PA" else "RGB")
    elif mode in ("1", "L", "RGB") and has_transparency:
        # A tRNS colour key: that colour is transparent.
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        # YCbCr, LAB, HSV, RGBX, ...: whatever Pillow decodes, it can convert to RGB.
        image = image.convert("RGBA" if "A" in mode else "RGB")
    return image, _matching_profile(icc, image.mode)


def _cmyk_to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    if icc and _profile_space(icc) == b"CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(
                image,
                source,
                srgb,
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
                outputMode="RGB",
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the naive conversion below is still an image
    return image.convert("RGB")


def _profile_space(icc: bytes) -> bytes:
    # ICC.1 header: the data colour space signature is bytes 16-19.
    return icc[16:20] if len(icc) >= 128 else b""


def _matching_profile(icc: bytes | None, mode: str) -> bytes | None:
    """``icc`` if it describes pixels of ``mode`` (an RGB profile on grey pixels would not)."""
    if not icc:
        return None
    space = _profile_space(icc)
    if mode in ("RGB", "RGBA") and space == b"RGB ":
        return icc
    if mode in ("L", "LA") and space == b"GRAY":
        return icc
    return None


def _cover_centre(image: Image.Image, spec: RenderSpec, focus: Anchor | None) -> Anchor:
    """Where a cover crop of ``image`` is centred: the focal point, else the gravity's."""
    if spec.fit != "cover" or focus is not None or spec.gravity == "centre":
        return focus or CENTRE
    width, height = image.size
    left, top, right, bottom = plan(image.size, spec).box
    window = ((right - left) / width, (bottom - top) / height)
    return anchor(image, spec.gravity, window)


def _shape(image: Image.Image, spec: RenderSpec, focus: Anchor | None) -> Image.Image:
    """Resize (and crop or pad) to the plan for the image's actual, possibly drafted, size."""
    layout = plan(image.size, spec, _cover_centre(image, spec, focus))
    resized = image
    if layout.size != image.size or layout.box != (0.0, 0.0, *map(float, image.size)):
        resized = image.resize(
            layout.size,
            Image.Resampling.LANCZOS,
            box=layout.box,
            reducing_gap=REDUCING_GAP,
        )
    if layout.canvas == layout.size:
        return resized
    has_alpha = resized.mode in ("LA", "RGBA")
    if has_alpha and spec.background is None:
        fill: tuple[int, ...] = (0, 0) if resized.mode == "LA" else (0, 0, 0, 0)
    else:
        red, green, blue = spec.background or (255, 255, 255)
        grey = round(0.299 * red + 0.587 * green + 0.114 * blue)
        fill = {
            "L": (grey,),
            "LA": (grey, 255),
            "RGB": (red, green, blue),
            "RGBA": (red, green, blue, 255),
        }[resized.mode]
    canvas = Image.new(resized.mode, layout.canvas, fill)
    left = (layout.canvas[0] - layout.size[0]) // 2
    top = (layout.canvas[1] - layout.size[1]) // 2
    canvas.paste(resized, (left, top))
    return canvas


def _drop_opaque_alpha(image: Image.Image) -> Image.Image:
    if image.mode not in ("LA", "RGBA"):
        return image
    low, _high = image.getchannel("A").getextrema()
    if low == 255:
        return image.convert("L" if image.mode == "LA" else "RGB")
    return image


def _flatten(image: Image.Image, background: tuple[int, int, int] | None) -> Image.Image:
    """Composite an image with alpha onto the background (for JPEG, which has no alpha)."""
    if image.mode not in ("LA", "RGBA"):
        return image
    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*(background or (255, 255, 255)), 255))
    base.alpha_composite(rgba)
    return base.convert("L" if image.mode == "LA" else "RGB")


def _encode(
    image: Image.Image, spec: RenderSpec, icc: bytes | None, kept: dict[str, bytes]
) -> Rendered:
    image = _drop_opaque_alpha(image)
    encoded: EncodedFormat
    if spec.format == "legacy":
        encoded = "png" if image.mode in ("LA", "RGBA") else "jpeg"
    else:
        encoded = spec.format
    if encoded == "jpeg":
        image = _flatten(image, spec.background)
    elif encoded in ("webp", "avif") and image.mode in ("L", "LA"):
        # Neither stores grey: widen to RGB, where a grey profile no longer applies.
        image = image.convert("RGB" if image.mode == "L" else "RGBA")
        icc = _matching_profile(icc, image.mode)
    width, height = image.size
    _check_side(width, height, encoded)
    # Nothing of the source's metadata rides along: only what is passed below is written.
    image.info = {}
    options = _options(encoded, spec, icc, kept)
    return Rendered(_save(image, encoded, options), encoded, width, height)


def _encode_animation(
    frames: list[Image.Image],
    durations: list[int],
    loop: int | None,
    spec: RenderSpec,
    icc: bytes | None,
    kept: dict[str, bytes],
) -> Rendered:
    # A client that took neither WebP nor AVIF gets GIF, which every browser animates.
    encoded: EncodedFormat = "webp" if spec.format == "webp" else "gif"
    width, height = frames[0].size
    _check_side(width, height, encoded)
    for frame in frames:
        frame.info = {}
    options = _options(encoded, spec, icc, kept)
    options.update(save_all=True, append_images=frames[1:], duration=durations)
    if loop is not None:
        options["loop"] = loop
    elif encoded == "webp":
        options["loop"] = 1  # a GIF without a loop count plays once; WebP's 0 is forever
    data = _save(frames[0], encoded, options)
    return Rendered(data, encoded, width, height, frames=len(frames))


def _check_side(width: int, height: int, encoded: EncodedFormat) -> None:
    if max(width, height) > MAX_SIDE[encoded]:
        raise ImageTooLarge(
            f"The variant would be {width}x{height} pixels, more than {encoded} can hold."
        )


def _options(
    encoded: EncodedFormat, spec: RenderSpec, icc: bytes | None, kept: dict[str, bytes]
) -> dict[str, object]:
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    # GIF holds neither block; Pillow writes no XMP into a PNG.
    options.update(
        (name, value)
        for name, value in kept.items()
        if encoded in ("jpeg", "webp", "avif") or (encoded == "png" and name == "exif")
    )
    quality = spec.quality_for(encoded)
    if encoded == "jpeg":
        options.update(quality=quality, optimize=True, progressive=spec.progressive)
    elif encoded == "png":
        options.update(compress_level=6)
    elif encoded == "webp":
        options.update(quality=quality, method=4)
    elif encoded == "avif":
        # One thread: the pool already runs one worker per core. Speed 8 (the default)
        # encodes about five times faster than libavif's own default 6 for files some 10%
        # larger: renders happen while a client waits.
        options.update(quality=quality, speed=spec.avif_speed, max_threads=1)
    return options


def _save(image: Image.Image, encoded: EncodedFormat, options: dict[str, object]) -> bytes:
    output = io.BytesIO()
    try:
        image.save(output, format=encoded.upper(), **options)
    except (OSError, ValueError) as exc:
        raise InvalidImage(f"The variant could not be encoded as {encoded}: {exc}") from None
    return output.getvalue()
