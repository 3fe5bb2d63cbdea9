"""What a browser makes of the gateway's answers: Debian's chromium (tests/browser.py) on pages
of another origin, as a site's pages would be.

The gateway answers no CORS yet: its images display on such a page, but the page's scripts
cannot read the same URLs. The fetch test pins that down, and changes when CORS lands.

On the local profile only: what reaches the browser is the HTTP layer's, the same for every
profile (tests/test_variants.py checks variant answers on both).
"""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import ConsoleMessage, Page

from tests.browser import OpenPage, PageServer
from tests.conftest import LOCAL_ONLY, PUBLIC_BUCKET, VARIANT_PRESETS, GatewayProcess, S3Client
from tests.unit.variants import images

pytestmark = LOCAL_ONLY

# Each image of the page by id: its natural size, [0, 0] when it did not load.
NATURAL_SIZES = """() => Object.fromEntries(
    Array.from(document.images, image => [image.id, [image.naturalWidth, image.naturalHeight]])
)"""
# A fetch from the page's scripts: the status, or the error that refused it.
FETCH = """async url => {
    try {
        return String((await fetch(url)).status);
    } catch (error) {
        return `${error.name}: ${error.message}`;
    }
}"""
# A no-cors fetch, which the browser lets through without showing the page the answer.
FETCH_NO_CORS = "async url => (await fetch(url, {mode: 'no-cors'})).type"


@pytest.fixture
def public_photo(gateway: GatewayProcess, s3: S3Client) -> str:
    """The URL of a landscape JPEG (800x400) that anyone may read."""
    key = f"browser/{uuid.uuid4().hex}.jpg"
    s3.put_object(
        Bucket=PUBLIC_BUCKET,
        Key=key,
        Body=images.jpeg_with_orientation(1),
        ContentType="image/jpeg",
    )
    return f"{gateway.endpoint}/{PUBLIC_BUCKET}/{key}"


async def test_an_object_and_its_variant_display_on_another_origin(
    page_origin: PageServer, open_page: OpenPage, public_photo: str
) -> None:
    page = await open_page(
        page_origin.publish(
            "/gallery.html",
            f'<img id="original" src="{public_photo}">'
            f'<img id="thumb" src="{public_photo}?variant=thumb">',
        )
    )
    assert await page.evaluate(NATURAL_SIZES) == {"original": [800, 400], "thumb": [64, 64]}


async def refused_fetch(page: Page, url: str) -> tuple[str, str]:
    """How the page's fetch of ``url`` failed, and why, as the browser's console tells (a
    script is never told)."""

    def about_url(message: ConsoleMessage) -> bool:
        return url in message.text

    async with page.expect_console_message(about_url, timeout=5_000) as logged:
        failure = await page.evaluate(FETCH, url)
    return failure, (await logged.value).text


async def test_scripts_of_another_origin_cannot_read_them_without_cors(
    page_origin: PageServer, open_page: OpenPage, public_photo: str
) -> None:
    page = await open_page(page_origin.publish("/script.html", "<title>script</title>"))
    for url in (public_photo, f"{public_photo}?variant=thumb"):
        failure, reason = await refused_fetch(page, url)
        assert failure == "TypeError: Failed to fetch"
        assert "blocked by CORS policy" in reason
        # Refused for want of CORS headers, not for want of an answer: the request got one.
        assert await page.evaluate(FETCH_NO_CORS, url) == "opaque"


async def test_srcset_picks_the_variant_by_device_pixel_ratio(
    page_origin: PageServer, open_page: OpenPage, public_photo: str
) -> None:
    # Drawn 50 CSS pixels wide: thumb (64 px) covers it at ratio 1, small (100 px) at 2. The
    # image's naturalWidth is in CSS pixels (the file's width over its density): 50 either way.
    thumb, small = (f"{public_photo}?variant={name}" for name in ("thumb", "small"))
    widths = {name: VARIANT_PRESETS[name]["width"] for name in ("thumb", "small")}
    url = page_origin.publish(
        "/srcset.html",
        f'<img id="photo" sizes="50px"'
        f' srcset="{thumb} {widths["thumb"]}w, {small} {widths["small"]}w">',
    )
    chosen = """() => [
        window.devicePixelRatio,
        document.images[0].currentSrc,
        document.images[0].naturalWidth,
        performance.getEntriesByType("resource").map(entry => entry.name),
    ]"""
    for ratio, src in [(1, thumb), (2, small)]:
        page = await open_page(url, device_scale_factor=ratio)
        # Only the chosen variant was requested.
        assert await page.evaluate(chosen) == [ratio, src, 50, [src]]
