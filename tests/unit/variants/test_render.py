"""gateway.variants.render with real images: geometry, orientation, colour, alpha, limits."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image, ImageFile, features

from gateway.variants.render import (
    MEMORY_OVERHEAD,
    ImageTooLarge,
    InvalidImage,
    Plan,
    RenderLimits,
    RenderSpec,
    UnsupportedImage,
    _draft,
    plan,
    render,
)
from tests.unit.variants import images
from tests.unit.variants.images import BLUE, GREEN, RED, WHITE, close_to, decode, encode

LIMITS = RenderLimits(max_source_bytes=64 * 1024**2, max_source_pixels=100_000_000)
FORMATS = ["jpeg", "png", "webp"] + (["avif"] if features.check("avif") else [])


def spec(
    width: int | None = 100,
    height: int | None = 100,
    fit: str = "inside",
    fmt: str = "png",
    quality: int = 90,
    background: tuple[int, int, int] | None = None,
) -> RenderSpec:
    return RenderSpec(width, height, fit, fmt, quality, background)  # type: ignore[arg-type]


def rendered_image(source: bytes, render_spec: RenderSpec) -> Image.Image:
    result = render(source, render_spec, LIMITS)
    image = decode(result.data)
    assert image.size == (result.width, result.height)
    assert image.format.lower() == result.format
    return image


def corner(image: Image.Image, where: str, inset: int = 4) -> tuple[int, ...]:
    width, height = image.size
    x = inset if "left" in where else width - 1 - inset
    y = inset if "top" in where else height - 1 - inset
    return image.convert("RGB").getpixel((x, y))


# --- geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "width", "height", "fit", "expected"),
    [
        # inside: fit in the box, never enlarged
        ((800, 400), 100, 100, "inside", ((0, 0, 800, 400), (100, 50), (100, 50), (100, 50))),
        ((400, 800), 100, 100, "inside", ((0, 0, 400, 800), (50, 100), (50, 100), (50, 100))),
        ((800, 400), 200, None, "inside", ((0, 0, 800, 400), (200, 100), (200, 100), (200, 100))),
        ((800, 400), None, 40, "inside", ((0, 0, 800, 400), (80, 40), (80, 40), (80, 40))),
        ((50, 40), 100, 100, "inside", ((0, 0, 50, 40), (50, 40), (50, 40), (50, 40))),
        # cover: the centre of the overflowing side
        ((800, 400), 100, 100, "cover", ((200, 0, 600, 400), (100, 100), (100, 100), (200, 100))),
        ((400, 800), 100, 50, "cover", ((0, 300, 400, 500), (100, 50), (100, 50), (100, 200))),
        ((50, 50), 100, 100, "cover", ((0, 0, 50, 50), (100, 100), (100, 100), (100, 100))),
        # contain: scaled to fit, centred on the full box
        ((800, 400), 100, 100, "contain", ((0, 0, 800, 400), (100, 50), (100, 100), (100, 50))),
        ((10, 1000), 100, 100, "contain", ((0, 0, 10, 1000), (1, 100), (100, 100), (1, 100))),
        # fill: stretched
        ((800, 400), 100, 100, "fill", ((0, 0, 800, 400), (100, 100), (100, 100), (100, 100))),
    ],
)  # fmt: skip
def test_plan(
    source: tuple[int, int], width: int | None, height: int | None, fit: str, expected: tuple
) -> None:
    # expected: (box, size, canvas, full)
    assert plan(source, spec(width, height, fit)) == Plan(*expected)


@pytest.mark.parametrize(
    ("fit", "width", "height", "size"),
    [
        ("cover", 320, 320, (320, 320)),
        ("contain", 320, 320, (320, 320)),
        ("inside", 320, 320, (320, 160)),
        ("fill", 320, 100, (320, 100)),
        ("inside", 2000, 2000, (800, 400)),  # never enlarged
        ("cover", 1600, 1600, (1600, 1600)),  # cover and contain may enlarge: the box is exact
    ],
)
def test_output_dimensions(fit: str, width: int, height: int, size: tuple[int, int]) -> None:
    source = encode(images.marked(), "PNG")
    assert rendered_image(source, spec(width, height, fit)).size == size


def test_cover_keeps_the_centre() -> None:
    source = encode(images.thirds(), "PNG")
    image = rendered_image(source, spec(90, 90, "cover"))
    for where in ("top-left", "top-right", "bottom-left", "bottom-right"):
        assert close_to(corner(image, where), GREEN)


def test_contain_pads_with_the_background() -> None:
    source = encode(images.thirds((200, 100)), "PNG")
    image = rendered_image(source, spec(100, 100, "contain", background=(0, 0, 0)))
    assert image.size == (100, 100)
    assert corner(image, "top-left", inset=1) == (0, 0, 0)
    assert close_to(image.getpixel((2, 50)), RED)
    assert close_to(image.getpixel((97, 50)), BLUE)


def test_contain_pads_white_by_default() -> None:
    source = encode(images.thirds((200, 100)), "PNG")
    image = rendered_image(source, spec(100, 100, "contain", fmt="jpeg"))
    assert close_to(corner(image, "bottom-right", inset=1), WHITE, 4)


def test_contain_pads_a_transparent_image_with_transparency() -> None:
    image = rendered_image(images.transparent_png((200, 100)), spec(100, 100, "contain"))
    assert image.mode == "RGBA"
    assert image.getpixel((50, 2))[3] == 0
    assert image.getpixel((90, 50)) == (255, 255, 255, 255)


# --- orientation ----------------------------------------------------------------------------

# Where the stored top-left (red) and top-right (green) corners appear when displayed, per the
# EXIF Orientation definitions (row 0 / column 0 of the stored image is which visual side).
DISPLAYED = {
    1: ("top-left", "top-right"),
    2: ("top-right", "top-left"),
    3: ("bottom-right", "bottom-left"),
    4: ("bottom-left", "bottom-right"),
    5: ("top-left", "bottom-left"),
    6: ("top-right", "bottom-right"),
    7: ("bottom-right", "top-right"),
    8: ("bottom-left", "top-left"),
}


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
@pytest.mark.parametrize("fmt", FORMATS)
def test_exif_orientation_is_applied(orientation: int, fmt: str) -> None:
    image = rendered_image(images.jpeg_with_orientation(orientation), spec(100, 100, fmt=fmt))
    # Stored 800x400; orientations 5-8 turn it a quarter.
    assert image.size == ((50, 100) if orientation >= 5 else (100, 50))
    red_at, green_at = DISPLAYED[orientation]
    assert close_to(corner(image, red_at), RED, 40), corner(image, red_at)
    assert close_to(corner(image, green_at), GREEN, 40), corner(image, green_at)
    assert "exif" not in image.info


def test_orientation_6_puts_the_stored_top_left_top_right() -> None:
    image = rendered_image(images.jpeg_with_orientation(6), spec(200, 200, "inside"))
    assert image.size == (100, 200)
    assert close_to(corner(image, "top-right"), RED)
    assert close_to(corner(image, "top-left"), BLUE)
    assert close_to(corner(image, "bottom-right"), GREEN)


def test_jpeg_is_decoded_at_a_reduced_scale() -> None:
    # Displayed 400x800 (orientation 6) into 100x100: 50x100 displayed, 100x50 stored, so the
    # decoder may scale by 1/8 and deliver exactly that.
    source = Image.open(io.BytesIO(images.jpeg_with_orientation(6)))
    _draft(source, spec(100, 100, "inside"), 6)
    assert source.size == (100, 50)
    source = Image.open(io.BytesIO(images.jpeg_with_orientation(1)))
    # cover 100x100 needs the whole image at 200x100: 1/4 scale.
    _draft(source, spec(100, 100, "cover"), 1)
    assert source.size == (200, 100)


# --- colour, modes, alpha -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_cmyk_jpeg_becomes_rgb(fmt: str) -> None:
    image = rendered_image(images.cmyk_jpeg((0, 255, 255, 0)), spec(32, 32, fmt=fmt))
    assert image.mode in ("RGB", "RGBA")
    assert close_to(corner(image, "top-left"), RED, 40)
    assert "icc_profile" not in image.info


def test_cmyk_profile_is_never_attached_to_rgb_output() -> None:
    # A profile that claims CMYK but cannot be parsed: converted naively, and not copied.
    bogus = bytes(16) + b"CMYK" + bytes(108)
    image = rendered_image(images.cmyk_jpeg((0, 255, 255, 0), bogus), spec(32, 32, fmt="jpeg"))
    assert image.mode == "RGB"
    assert "icc_profile" not in image.info


@pytest.mark.parametrize("fmt", FORMATS)
def test_icc_profile_is_kept(fmt: str) -> None:
    profile = images.srgb_profile()
    source = encode(images.marked(), "JPEG", icc_profile=profile)
    image = rendered_image(source, spec(64, 64, fmt=fmt))
    assert image.info.get("icc_profile") == profile


def test_rgb_profile_is_dropped_from_grey_output() -> None:
    source = encode(Image.new("L", (40, 40), 128), "PNG", icc_profile=images.srgb_profile())
    image = rendered_image(source, spec(20, 20))
    assert image.mode == "L"
    assert "icc_profile" not in image.info


def test_metadata_is_stripped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Gateway Test Camera"
    exif[0x8298] = "Copyright notice"
    source = encode(
        images.marked(),
        "JPEG",
        exif=exif.tobytes(),
        comment=b"a comment",
        xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
    )
    for fmt in FORMATS:
        result = render(source, spec(64, 64, fmt=fmt), LIMITS)
        image = decode(result.data)
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "comment"} & set(image.info), fmt
        assert b"Gateway Test Camera" not in result.data
        assert b"Copyright notice" not in result.data


@pytest.mark.parametrize("fmt", ["png", "webp"] + (["avif"] if "avif" in FORMATS else []))
def test_alpha_is_kept_where_the_format_has_it(fmt: str) -> None:
    image = rendered_image(images.transparent_png(), spec(100, 100, fmt=fmt))
    assert image.mode == "RGBA"
    assert image.getpixel((5, 25))[3] <= 8
    assert close_to(image.getpixel((95, 25)), (255, 255, 255, 255), 8)


def test_resize_does_not_darken_edges_next_to_transparency() -> None:
    # Transparent pixels are black underneath; without premultiplied alpha they would bleed
    # grey into the white edge.
    image = rendered_image(images.transparent_png((200, 100)), spec(30, 30, fmt="png"))
    for x in range(image.size[0]):
        red, green, blue, alpha = image.getpixel((x, 7))
        if alpha > 32:
            assert min(red, green, blue) >= 200, (x, image.getpixel((x, 7)))


def test_alpha_onto_jpeg_uses_the_background() -> None:
    source = images.transparent_png()
    white = rendered_image(source, spec(100, 100, fmt="jpeg"))
    assert white.mode == "RGB"
    assert close_to(white.getpixel((5, 25)), WHITE, 4)
    red = rendered_image(source, spec(100, 100, fmt="jpeg", background=RED))
    assert close_to(red.getpixel((5, 25)), RED, 8)
    assert close_to(red.getpixel((95, 25)), WHITE, 8)


def test_legacy_is_png_with_transparency_and_jpeg_without() -> None:
    assert render(images.transparent_png(), spec(fmt="legacy"), LIMITS).format == "png"
    assert render(images.opaque_rgba_png(), spec(fmt="legacy"), LIMITS).format == "jpeg"
    assert render(encode(images.marked(), "PNG"), spec(fmt="legacy"), LIMITS).format == "jpeg"


def test_opaque_alpha_channel_is_dropped() -> None:
    assert rendered_image(images.opaque_rgba_png(), spec(fmt="png")).mode == "RGB"


def test_grey_with_alpha() -> None:
    png = rendered_image(images.grey_alpha_png(), spec(50, 50, fmt="png"))
    assert png.mode == "LA"
    assert png.getpixel((25, 40))[1] == 0
    webp = rendered_image(images.grey_alpha_png(), spec(50, 50, fmt="webp"))
    assert webp.mode == "RGBA"
    assert close_to(webp.getpixel((25, 5)), (200, 200, 200, 255), 8)
    jpeg = rendered_image(images.grey_alpha_png(), spec(50, 50, fmt="jpeg"))
    assert jpeg.mode == "L"
    assert abs(jpeg.getpixel((25, 40)) - 255) <= 4  # transparent half onto white


@pytest.mark.parametrize("fmt", FORMATS)
def test_palette_gif_with_transparency(fmt: str) -> None:
    image = rendered_image(images.palette_gif(transparent=True), spec(80, 40, fmt=fmt))
    if fmt == "jpeg":
        assert close_to(image.getpixel((10, 20)), WHITE, 8)
    else:
        assert image.mode == "RGBA"
        assert image.getpixel((10, 20))[3] == 0
    assert close_to(image.convert("RGB").getpixel((70, 20)), BLUE, 40)


def test_palette_gif_without_transparency() -> None:
    image = rendered_image(images.palette_gif(transparent=False), spec(80, 40, fmt="png"))
    assert image.mode == "RGB"
    assert image.getpixel((10, 20)) == RED
    assert image.getpixel((70, 20)) == BLUE


def test_animated_gif_renders_its_first_frame() -> None:
    image = rendered_image(images.animated_gif(), spec(20, 20, fmt="png"))
    assert close_to(image.convert("RGB").getpixel((10, 10)), RED, 8)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    image = rendered_image(images.sixteen_bit_png(), spec(257, 4, fmt="png"))
    assert image.mode == "L"
    assert image.getpixel((0, 1)) <= 2
    assert abs(image.getpixel((128, 1)) - 128) <= 3
    assert image.getpixel((256, 1)) >= 253


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_formats(fmt: str) -> None:
    result = render(encode(images.marked(), "PNG"), spec(64, 64, fmt=fmt), LIMITS)
    assert result.format == fmt
    assert result.content_type == f"image/{fmt}"
    assert decode(result.data).format == fmt.upper()


# --- refusals -------------------------------------------------------------------------------


def test_truncated_jpeg_is_invalid() -> None:
    with pytest.raises(InvalidImage, match="could not be decoded"):
        render(images.truncated_jpeg(), spec(), LIMITS)


def test_decompression_bomb_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = images.png_header_only(100_000, 100_000)
    assert len(bomb) < 200

    def decode_pixels(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    # Refused before any pixel is decoded, which is what keeps a bomb cheap: checked by
    # making decoding impossible rather than by timing it.
    monkeypatch.setattr(ImageFile.ImageFile, "load", decode_pixels)
    with pytest.raises(ImageTooLarge, match="pixels"):
        render(bomb, spec(), LIMITS)


def test_pixel_limit() -> None:
    source = encode(Image.new("RGB", (200, 200)), "PNG")
    limits = RenderLimits(max_source_bytes=10**6, max_source_pixels=200 * 200 - 1)
    with pytest.raises(ImageTooLarge, match="200x200"):
        render(source, spec(), limits)
    limits = RenderLimits(max_source_bytes=10**6, max_source_pixels=200 * 200)
    assert render(source, spec(), limits).width == 100


def test_an_image_that_would_not_fit_in_a_worker_is_refused_from_its_header() -> None:
    # 1 x 100,000,000 is within the pixel limit, but Pillow keeps a pointer per row: some
    # 900 MB decoded, more than a default worker may hold for pixels.
    tall = images.png_header_only(1, 100_000_000)
    with pytest.raises(ImageTooLarge, match=r"1x100000000 pixels, RGB\) would need 1144 MiB"):
        render(tall, spec(), LIMITS)
    # The same pixels as a square fit.
    assert LIMITS.pixel_memory_bytes >= 10_000 * (10_000 * 4 + 8)


def test_render_memory_counts_a_copy_to_turn_or_convert() -> None:
    size = (1000, 1000)
    # Decoded: 1000 rows of 4000 bytes and a pointer; a conversion or an EXIF turn doubles it.
    decoded = 1000 * (4000 + 8)
    fits = RenderLimits(10**8, 10**8, max_memory_bytes=MEMORY_OVERHEAD + decoded)
    assert render(encode(images.marked(size), "PNG"), spec(), fits).width == 100
    turned = encode(images.marked(size), "JPEG", exif=_orientation_exif(6))
    huge = spec(2000, 2000, fit="inside")  # no draft: decoded at full size
    with pytest.raises(ImageTooLarge, match="would need 7 MiB"):
        render(turned, huge, fits)
    with pytest.raises(ImageTooLarge, match="would need 4 MiB"):
        render(encode(Image.new("P", size), "PNG", transparency=0), spec(), fits)


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[images.ORIENTATION] = orientation
    return exif.tobytes()


def test_sixteen_bit_grey_png_decodes_to_eight_bits() -> None:
    # Decoded straight to 8 bits: the same values as scaling all 16 bits, within rounding.
    source = images.sixteen_bit_png(width=65536 // 64)
    wide = spec(1024, 4, fit="fill", fmt="png")
    image = rendered_image(source, wide)
    expected = [round(x * 65535 / 1023) / 257 for x in range(1024)]
    assert all(abs(image.getpixel((x, 2)) - expected[x]) <= 1 for x in range(1024))


def test_sixteen_bit_tiff_is_scaled_too() -> None:
    ramp = decode(images.sixteen_bit_png())
    image = rendered_image(encode(ramp, "TIFF"), spec(257, 4, fmt="png"))
    assert image.mode == "L"
    assert image.getpixel((0, 1)) <= 2
    assert abs(image.getpixel((128, 1)) - 128) <= 3
    assert image.getpixel((256, 1)) >= 253


def test_byte_limit() -> None:
    source = encode(images.marked(), "PNG")
    limits = RenderLimits(max_source_bytes=len(source) - 1, max_source_pixels=10**8)
    with pytest.raises(ImageTooLarge, match="bytes"):
        render(source, spec(), limits)


@pytest.mark.parametrize(
    "source",
    [
        b"",
        b"not an image at all",
        b"%PDF-1.7\n" + bytes(100),
        # A format Pillow reads, but variants do not accept.
        encode(Image.new("RGB", (16, 16)), "ICO"),
    ],
)
def test_not_an_image(source: bytes) -> None:
    with pytest.raises(UnsupportedImage):
        render(source, spec(), LIMITS)


def test_variant_too_large_for_its_format() -> None:
    source = encode(Image.new("L", (1, 20_000)), "PNG")
    with pytest.raises(ImageTooLarge, match="webp"):
        render(source, spec(width=8192, height=None, fmt="webp"), LIMITS)


# --- densities, quality per format, metadata ------------------------------------------------


@pytest.mark.parametrize(
    ("fit", "density", "upscale", "expected"),
    [
        ("cover", 2, False, (200, 200)),
        ("cover", 3, False, (300, 300)),
        ("cover", 4, False, (400, 400)),  # the source's 400 px of height: just enough
        ("contain", 4, False, (400, 400)),
        ("inside", 4, False, (400, 200)),  # inside never enlarges
        ("fill", 4, False, (400, 400)),
        ("cover", 4, True, (400, 400)),
    ],
)
def test_density_multiplies_the_box(
    fit: str, density: int, upscale: bool, expected: tuple[int, int]
) -> None:
    source = encode(images.marked((800, 400)), "PNG")
    result = render(source, replace(spec(fit=fit), density=density, upscale=upscale), LIMITS)
    assert (result.width, result.height) == expected


def test_density_is_capped_at_the_source_unless_upscale() -> None:
    source = encode(images.marked((150, 120), block=30), "PNG")
    one = render(source, spec(100, 100, "cover"), LIMITS)
    capped = render(source, replace(spec(100, 100, "cover"), density=3), LIMITS)
    enlarged = render(source, replace(spec(100, 100, "cover"), density=3, upscale=True), LIMITS)
    assert (one.width, one.height) == (100, 100)
    # The source's 120 px of height: the box grows to 120x120, aspect ratio kept.
    assert (capped.width, capped.height) == (120, 120)
    assert (enlarged.width, enlarged.height) == (300, 300)
    # Never smaller than 1x, even from a source smaller than the 1x box.
    tiny = encode(images.marked((50, 40), block=10), "PNG")
    small = render(tiny, replace(spec(100, 100, "contain"), density=2), LIMITS)
    assert (small.width, small.height) == (100, 100)


def test_quality_per_format() -> None:
    source = encode(images.marked((400, 300)).effect_spread(20), "PNG")
    qualities = (("webp", 20),)
    low_webp = render(source, replace(spec(fmt="webp", quality=95), qualities=qualities), LIMITS)
    high_webp = render(source, spec(fmt="webp", quality=95), LIMITS)
    jpeg = render(source, replace(spec(fmt="jpeg", quality=95), qualities=qualities), LIMITS)
    assert len(low_webp.data) < len(high_webp.data)
    assert jpeg.data == render(source, spec(fmt="jpeg", quality=95), LIMITS).data


def test_progressive_is_a_choice() -> None:
    source = encode(images.marked(), "PNG")
    assert decode(render(source, spec(fmt="jpeg"), LIMITS).data).info.get("progressive")
    plain = render(source, replace(spec(fmt="jpeg"), progressive=False), LIMITS)
    assert not decode(plain.data).info.get("progressive")


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_metadata_kept_when_not_stripped(fmt: str) -> None:
    source = images.jpeg_with_orientation(6)
    stripped = decode(render(source, spec(fmt=fmt), LIMITS).data)
    kept = decode(render(source, replace(spec(fmt=fmt), strip_metadata=False), LIMITS).data)
    assert "exif" not in stripped.info
    exif = kept.getexif()
    assert exif[0x010F] == "Gateway Test Camera"
    # The orientation was applied to the pixels: a viewer must not turn them again.
    assert exif.get(images.ORIENTATION, 1) == 1
    assert kept.size == (50, 100)
