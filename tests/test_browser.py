"""What a browser makes of the gateway's answers: Debian's chromium (tests/browser.py) on pages
of another origin, as a site's pages would be.

Images display on such a page whatever the bucket's CORS rules; a page's scripts can read the
gateway's answers (fetch, canvas readback, uploads) only where a rule allows their origin.

On the local profile only: what reaches the browser is the HTTP layer's, the same for every
profile (tests/test_variants.py checks variant answers on both).
"""

from __future__ import annotations

import html
import uuid
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, Page

from tests.browser import OpenPage, PageServer
from tests.conftest import (
    CORS_BUCKET,
    LOCAL_ONLY,
    PUBLIC_BUCKET,
    SITE_BUCKET,
    VARIANT_PRESETS,
    WEBSITE_DOMAIN,
    GatewayProcess,
    S3Client,
)
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


def put_photo(gateway: GatewayProcess, s3: S3Client, bucket: str) -> str:
    """The URL of a new landscape JPEG (800x400) in ``bucket``."""
    key = f"browser/{uuid.uuid4().hex}.jpg"
    s3.put_object(
        Bucket=bucket, Key=key, Body=images.jpeg_with_orientation(1), ContentType="image/jpeg"
    )
    return f"{gateway.endpoint}/{bucket}/{key}"


@pytest.fixture
def public_photo(gateway: GatewayProcess, s3: S3Client) -> str:
    """A photo anyone may read, in a bucket without CORS rules."""
    return put_photo(gateway, s3, PUBLIC_BUCKET)


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


async def test_scripts_of_another_origin_cannot_read_them_without_a_cors_rule(
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


@pytest.fixture
def shared_photo(gateway: GatewayProcess, s3: S3Client) -> str:
    """The same photo in a public bucket whose YAML rules let any origin GET."""
    return put_photo(gateway, s3, CORS_BUCKET)


async def test_scripts_read_what_a_cors_rule_allows(
    page_origin: PageServer, open_page: OpenPage, shared_photo: str
) -> None:
    page = await open_page(page_origin.publish("/script.html", "<title>script</title>"))
    read = """async url => {
        const response = await fetch(url);
        return [response.status, response.headers.get("content-type"),
                (await response.arrayBuffer()).byteLength > 0];
    }"""
    assert await page.evaluate(read, shared_photo) == [200, "image/jpeg", True]
    variant = f"{shared_photo}?variant=thumb"
    assert await page.evaluate(read, variant) == [200, "image/webp", True]
    # A missing key: the 404 itself is readable, so the page can tell why.
    status = "async url => (await fetch(url)).status"
    assert await page.evaluate(status, shared_photo + ".missing") == 404


CANVAS = """src => new Promise(resolve => {
    const image = new Image();
    image.crossOrigin = "anonymous";
    image.onload = () => {
        const canvas = document.createElement("canvas");
        canvas.width = image.naturalWidth;
        canvas.height = image.naturalHeight;
        canvas.getContext("2d").drawImage(image, 0, 0);
        try {
            resolve(canvas.toDataURL("image/png").slice(0, 22));
        } catch (error) {
            resolve(`${error.name}`);
        }
    };
    image.onerror = () => resolve("error");
    image.src = src;
})"""


async def test_a_crossorigin_image_can_be_read_back_from_a_canvas(
    page_origin: PageServer, open_page: OpenPage, shared_photo: str, public_photo: str
) -> None:
    page = await open_page(page_origin.publish("/canvas.html", "<title>canvas</title>"))
    variant = f"{shared_photo}?variant=thumb"
    assert await page.evaluate(CANVAS, variant) == "data:image/png;base64,"
    # Without a rule, a crossorigin image does not even load.
    assert await page.evaluate(CANVAS, f"{public_photo}?variant=thumb") == "error"


async def test_a_presigned_put_from_a_page_passes_its_preflight(
    gateway: GatewayProcess,
    s3: S3Client,
    bucket: str,
    page_origin: PageServer,
    open_page: OpenPage,
) -> None:
    page = await open_page(page_origin.publish("/upload.html", "<title>upload</title>"))
    origin = page_origin.origin
    key = "from-the-page.txt"
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": "text/plain"}
    )
    put = """async url => {
        try {
            const response = await fetch(url, {
                method: "PUT", body: "typed in a browser", headers: {"Content-Type": "text/plain"},
            });
            return [response.status, response.headers.get("etag") !== null];
        } catch (error) {
            return [`${error.name}: ${error.message}`, false];
        }
    }"""
    # No rule yet: the preflight is refused, and nothing is stored.
    assert await page.evaluate(put, url) == ["TypeError: Failed to fetch", False]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    rules = [
        {
            "AllowedOrigins": [origin],
            "AllowedMethods": ["PUT"],
            "AllowedHeaders": ["content-type"],
            "ExposeHeaders": ["ETag"],
        }
    ]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    assert await page.evaluate(put, url) == [200, True]
    stored = s3.get_object(Bucket=bucket, Key=key)
    assert stored["Body"].read() == b"typed in a browser"
    assert stored["ContentType"] == "text/plain"
    s3.delete_object(Bucket=bucket, Key=key)


async def test_a_website_host_serves_index_and_error_documents(
    gateway: GatewayProcess, s3: S3Client, open_page: OpenPage
) -> None:
    for key, text in (
        ("index.html", "<title>Home</title><h1>Welcome</h1>"),
        ("guide/index.html", "<title>Guide</title><h1>Guide</h1><a href='step.html'>next</a>"),
        ("guide/step.html", "<title>Step</title><h1>Step one</h1>"),
        ("404.html", "<title>Lost</title><h1>Nothing here</h1>"),
    ):
        s3.put_object(Bucket=SITE_BUCKET, Key=key, Body=text.encode(), ContentType="text/html")
    site = f"http://{SITE_BUCKET}.{WEBSITE_DOMAIN}:{gateway.port}"

    page = await open_page(f"{site}/")
    assert await page.title() == "Home"
    assert await page.text_content("h1") == "Welcome"

    # "/guide" is redirected to "/guide/", where the page's relative link resolves.
    answer = await page.goto(f"{site}/guide")
    assert answer is not None and answer.status == 200
    assert page.url == f"{site}/guide/"
    await page.click("a")
    await page.wait_for_load_state()
    assert await page.text_content("h1") == "Step one"

    missing = await page.goto(f"{site}/no/such/page.html")
    assert missing is not None and missing.status == 404
    assert await page.title() == "Lost"


def upload_form(presigned: dict[str, Any]) -> str:
    """The S3 docs' HTML form: the policy's fields as hidden inputs, then the file."""
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in presigned["fields"].items()
    )
    return (
        f'<form action="{presigned["url"]}" method="post" enctype="multipart/form-data">'
        f'{inputs}<input type="file" name="file"><input type="submit" value="Upload"></form>'
    )


async def test_an_html_form_from_generate_presigned_post_uploads_a_file(
    gateway: GatewayProcess, s3: S3Client, page_origin: PageServer, open_page: OpenPage
) -> None:
    done = page_origin.publish("/uploaded.html", "<h1>thanks</h1>")
    key = f"browser-uploads/{uuid.uuid4().hex}/${{filename}}"
    presigned = s3.generate_presigned_post(
        PUBLIC_BUCKET,
        key,
        Fields={"success_action_redirect": done, "Content-Type": "text/plain"},
        Conditions=[
            {"success_action_redirect": done},
            ["starts-with", "$Content-Type", "text/"],
            ["content-length-range", 1, 1000],
        ],
    )
    page = await open_page(page_origin.publish("/upload.html", upload_form(presigned)))
    await page.set_input_files(
        "input[type=file]", files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"hi!"}]
    )
    async with page.expect_navigation(url=f"{done}?*"):
        await page.click("input[type=submit]")
    assert await page.text_content("h1") == "thanks"
    stored_key = key.replace("${filename}", "note.txt")
    assert f"key={stored_key.replace('/', '%2F')}" in page.url
    stored = s3.get_object(Bucket=PUBLIC_BUCKET, Key=stored_key)
    assert stored["Body"].read() == b"hi!" and stored["ContentType"] == "text/plain"


async def test_a_form_violating_its_policy_is_refused(
    gateway: GatewayProcess, s3: S3Client, page_origin: PageServer, open_page: OpenPage
) -> None:
    prefix = f"browser-uploads/{uuid.uuid4().hex}/"
    presigned = s3.generate_presigned_post(
        PUBLIC_BUCKET, prefix + "${filename}", Conditions=[["content-length-range", 1, 10]]
    )
    page = await open_page(page_origin.publish("/upload-small.html", upload_form(presigned)))
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"x" * 100}],
    )
    async with page.expect_navigation() as navigation:
        await page.click("input[type=submit]")
    answer = await navigation.value
    assert answer is not None and answer.status == 400
    assert "EntityTooLarge" in await page.content()
    assert "Contents" not in s3.list_objects_v2(Bucket=PUBLIC_BUCKET, Prefix=prefix)


# A page's script posting a presigned form with fetch(): [status, ETag, body], or the error.
POST_FORM = """async ([url, fields, name, text]) => {
    const form = new FormData();
    for (const [field, value] of Object.entries(fields)) {
        form.append(field, value);
    }
    form.append("file", new Blob([text], {type: "text/plain"}), name);
    try {
        const response = await fetch(url, {method: "POST", body: form});
        return [response.status, response.headers.get("etag"), await response.text()];
    } catch (error) {
        return [`${error.name}: ${error.message}`, null, ""];
    }
}"""


async def test_a_script_posting_a_form_reads_the_answer_where_a_cors_rule_allows(
    s3: S3Client, bucket: str, page_origin: PageServer, open_page: OpenPage
) -> None:
    page = await open_page(page_origin.publish("/post-form.html", "<title>post</title>"))

    async def post_form(key: str, text: str, conditions: list[Any]) -> list[Any]:
        presigned = s3.generate_presigned_post(bucket, key, Conditions=conditions)
        args = [presigned["url"], presigned["fields"], key, text]
        answer: list[Any] = await page.evaluate(POST_FORM, args)
        return answer

    # A form post is a simple request, sent without a preflight: without a rule the page cannot
    # read the answer, but the policy, not CORS, decides the write, and this form may write.
    assert await post_form("no-rule.txt", "stored", []) == ["TypeError: Failed to fetch", None, ""]
    assert s3.get_object(Bucket=bucket, Key="no-rule.txt")["Body"].read() == b"stored"
    rule = {
        "AllowedOrigins": [page_origin.origin],
        "AllowedMethods": ["POST"],
        "ExposeHeaders": ["ETag"],
    }
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    status, etag, body = await post_form("with-rule.txt", "readable", [])
    assert (status, body) == (204, "")
    assert etag == s3.head_object(Bucket=bucket, Key="with-rule.txt")["ETag"]
    # The refusal of a form against its policy is readable too, and stores nothing.
    status, etag, body = await post_form(
        "too-big.txt", "far too big", [["content-length-range", 1, 3]]
    )
    assert (status, etag) == (400, None)
    assert "<Code>EntityTooLarge</Code>" in body
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == [
        "no-rule.txt",
        "with-rule.txt",
    ]
