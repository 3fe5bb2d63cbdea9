"""Animated sources: how many frames a render keeps, decided before any frame is decoded.

A variant of an animated image costs every frame: decoding each at the source's full size, and
holding each output frame until the encoder writes them all. So the frames are counted from
the container first (GIF: a walk over its block structure that reads no pixel data; WebP and
APNG declare their count in a header), and an animation with more frames than the preset's
``max_frames``, or more pixels over all its frames (source or output) than the pixel limit,
is rendered from its first frame alone: still a valid variant, and no more work than a still
image.
"""

from __future__ import annotations

# Containers whose frames are an animation (a multi-page TIFF or an MPO's second frame is not).
ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
# Decoding a GIF frame keeps the frame, the previous one (for disposal) and a working copy.
FULL_FRAMES_HELD = 3
RGBA_BYTES = 4


def gif_frame_count(data: bytes, limit: int) -> int:
    """The frames (image descriptors) of a GIF, counting no further than ``limit``.

    Only block headers and sub-block lengths are read (GIF89a, section 15 onwards): the LZW
    data is skipped, so the cost is a step per 255 bytes, never a decoded pixel. Pillow's own
    ``n_frames`` parses every frame header in Python and knows no bound.
    """
    if len(data) < 13 or data[:3] != b"GIF":
        return 0
    position = 13 + _colour_table_size(data[10])
    count = 0
    while position < len(data) and count < limit:
        block = data[position]
        position += 1
        if block == 0x21:  # extension: a label, then sub-blocks
            position = _skip_sub_blocks(data, position + 1)
        elif block == 0x2C:  # image descriptor: 9 bytes, a colour table, LZW code size, data
            if position + 9 > len(data):
                break
            position += 9 + _colour_table_size(data[position + 8])
            position = _skip_sub_blocks(data, position + 1)
            count += 1
        else:  # the trailer (0x3B), or bytes that are no block: the frames end here
            break
    return count


def _colour_table_size(flags: int) -> int:
    return 3 << ((flags & 0x07) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(data: bytes, position: int) -> int:
    while position < len(data):
        size = data[position]
        position += 1 + size
        if size == 0:
            break
    return position


def frames_to_keep(
    frames: int,
    source_size: tuple[int, int],
    output_pixels: int,
    max_frames: int,
    max_pixels: int,
    pixel_memory_bytes: int,
) -> int:
    """How many frames a render of an animation keeps: all of them, or 1 (the first) when
    there are more than ``max_frames`` or their pixels exceed the budget.

    ``output_pixels`` bounds one output frame (an output frame is held until all are
    encoded). The budget: the frames' source pixels and output pixels each within the pixel
    limit, and the memory of the frames being decoded plus every output frame within what a
    render may use.
    """
    if frames <= 1 or frames > max_frames:
        return 1
    width, height = source_size
    if frames * width * height > max_pixels or frames * output_pixels > max_pixels:
        return 1
    decoding = FULL_FRAMES_HELD * width * height * RGBA_BYTES
    if decoding + frames * output_pixels * RGBA_BYTES > pixel_memory_bytes:
        return 1
    return frames
