"""Real images made on the spot, each with a property a render must get right."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image, ImageCms, ImageDraw

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
GREY = (128, 128, 128)
SKIN = (224, 172, 140)
ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    output = io.BytesIO()
    image.save(output, format=fmt, **options)
    return output.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def marked(size: tuple[int, int] = (800, 400), block: int = 120) -> Image.Image:
    """Blue, with a red block in the top-left corner and a green one in the top-right."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, block, block))
    image.paste(GREEN, (size[0] - block, 0, size[0], block))
    return image


# --- where a crop should land -----------------------------------------------------------


def noise(size: tuple[int, int], spread: int = 256) -> Image.Image:
    """Uniform grey noise, the same on every run."""
    rng = random.Random(size[0] * 7919 + spread)
    low = 128 - spread // 2
    data = bytes(low + rng.randrange(spread) for _ in range(size[0] * size[1]))
    return Image.frombytes("L", size, data).convert("RGB")


def detailed_patch(size: tuple[int, int] = (1200, 400), left: int = 950) -> Image.Image:
    """Flat grey, with one square of noise (the only detail) whose left side is at ``left``."""
    image = Image.new("RGB", size, GREY)
    side = size[1] // 2
    image.paste(noise((side, side)), (left, size[1] // 4))
    return image


def face_and_texture() -> Image.Image:
    """A skin-toned disc on the left; mild grey texture (more edges than the disc) right."""
    image = Image.new("RGB", (1200, 400), (30, 90, 40))
    ImageDraw.Draw(image).ellipse((150, 100, 330, 330), fill=SKIN)
    image.paste(noise((300, 400), 60), (850, 0))
    return image


def jpeg_with_orientation(orientation: int, **options: object) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "Gateway Test Camera"  # Make: metadata that must not survive
    return encode(marked(), "JPEG", exif=exif.tobytes(), quality=95, **options)


def cmyk_jpeg(color: tuple[int, int, int, int], icc: bytes | None = None) -> bytes:
    image = Image.new("CMYK", (64, 48), color)
    return encode(image, "JPEG", quality=95, **({"icc_profile": icc} if icc else {}))


def transparent_png(size: tuple[int, int] = (200, 100)) -> bytes:
    """Left half fully transparent (black underneath), right half opaque white."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((255, 255, 255, 255), (size[0] // 2, 0, size[0], size[1]))
    return encode(image, "PNG")


def opaque_rgba_png(size: tuple[int, int] = (120, 80)) -> bytes:
    return encode(Image.new("RGBA", size, (10, 200, 30, 255)), "PNG")


def grey_alpha_png(size: tuple[int, int] = (100, 100)) -> bytes:
    image = Image.new("LA", size, (0, 0))
    image.paste((200, 255), (0, 0, size[0], size[1] // 2))
    return encode(image, "PNG")


def palette_gif(transparent: bool) -> bytes:
    """A palette image: index 0 red, 1 blue; left half index 0 (transparent if asked)."""
    image = Image.new("P", (80, 40), 1)
    image.putpalette([*RED, *BLUE] + [0, 0, 0] * 254)
    image.paste(0, (0, 0, 40, 40))
    options = {"transparency": 0} if transparent else {}
    return encode(image, "GIF", **options)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), RED), Image.new("RGB", (40, 40), BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def sixteen_bit_png(width: int = 257) -> bytes:
    """A horizontal 16-bit grey ramp: column x holds x * 65535 / (width - 1)."""
    image = Image.new("I;16", (width, 4))
    for x in range(width):
        for y in range(4):
            image.putpixel((x, y), round(x * 65535 / (width - 1)))
    return encode(image, "PNG")


def truncated_jpeg() -> bytes:
    data = encode(marked((640, 480)), "JPEG", quality=90)
    return data[: len(data) // 2]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds almost none of them."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def thirds(size: tuple[int, int] = (300, 100)) -> Image.Image:
    """Red, green and blue thirds from left to right."""
    image = Image.new("RGB", size, GREEN)
    third = size[0] // 3
    image.paste(RED, (0, 0, third, size[1]))
    image.paste(BLUE, (size[0] - third, 0, size[0], size[1]))
    return image


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 24) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- sources that cost a decoder far more than their size -----------------------------------


def uniform_png(width: int, height: int, color_type: int, bit_depth: int) -> bytes:
    """A PNG of ``width`` x ``height`` zero-valued pixels, compressed as it is made (a
    10000x10000 RGB one is some 300 KB and never exists uncompressed here). ``color_type``
    0 is grey, 2 RGB; ``bit_depth`` 8 or 16."""
    channels = {0: 1, 2: 3}[color_type]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)  # filter byte, then the pixels
    rows_per_batch = max(1, (4 * 1024**2) // len(row))
    compressor = zlib.compressobj(9)
    pieces = []
    for start in range(0, height, rows_per_batch):
        pieces.append(compressor.compress(row * min(rows_per_batch, height - start)))
    pieces.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(pieces))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def many_scan_jpeg(scans: int, size: tuple[int, int] = (2000, 1500)) -> bytes:
    """A progressive JPEG whose last AC scan is repeated until there are ``scans`` scans.

    libjpeg only warns about a scan that refines coefficients already complete, and decodes
    every one of them in full: a small file that keeps a decoder busy for seconds, mostly
    inside one call into C.
    """
    data = encode(marked(size), "JPEG", quality=90, progressive=True)
    # Segments after the frame header: each scan is an SOS segment and its entropy-coded
    # data, up to the next marker that is not a restart marker or a stuffed 0xFF.
    starts = [index for index in range(len(data) - 1) if data[index : index + 2] == b"\xff\xda"]
    end = data.rindex(b"\xff\xd9")
    last_scan = data[starts[-1] : end]
    extra = max(0, scans - len(starts))
    return data[:end] + last_scan * extra + data[end:]


def animated(
    fmt: str,
    durations: list[int],
    size: tuple[int, int] = (120, 80),
    loop: int | None = 0,
) -> bytes:
    """An animation of ``len(durations)`` frames, each a different colour with a block that
    moves (no two frames alike: encoders merge identical ones)."""
    frames = []
    for index in range(len(durations)):
        frame = Image.new("RGB", size, (40 * index % 256, 200, 255 - 30 * index % 256))
        frame.paste(RED, (index * 8, index * 4, index * 8 + size[0] // 3, index * 4 + size[1] // 3))
        frames.append(frame)
    options: dict[str, object] = {"save_all": True, "append_images": frames[1:]}
    options["duration"] = durations
    if loop is not None:
        options["loop"] = loop
    return encode(frames[0], fmt, **options)


def frames_of(data: bytes) -> tuple[str, int, list[int], int | None]:
    """An encoded image's format, frame count, frame durations (ms) and loop count."""
    image = Image.open(io.BytesIO(data))
    durations = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        image.load()
        durations.append(round(image.info.get("duration", 0)))
    return str(image.format), len(durations), durations, image.info.get("loop")
