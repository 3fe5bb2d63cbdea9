"""Image variants through live gateways: GET/HEAD ?variant=NAME as clients and browsers send it.

The presets are those of tests.conftest.VARIANT_PRESETS; images are made on the spot
(tests.unit.variants.images) and every answer is decoded with Pillow.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
import requests
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from lxml import etree
from PIL import features

from tests.conftest import (
    EAGER_BUCKET,
    LOCAL_ONLY,
    PUBLIC_BUCKET,
    REGION,
    ROOT_ACCESS_KEY,
    ROOT_SECRET_KEY,
    UPSTREAM,
    VARIANT_PRESETS,
    GatewayProcess,
    blob_files,
    db_fetch,
)
from tests.unit.variants import images
from tests.unit.variants.images import BLUE, GREEN, RED, WHITE, close_to, decode, encode

CREDENTIALS = Credentials(ROOT_ACCESS_KEY, ROOT_SECRET_KEY)
AVIF = features.check("avif")


# --- helpers --------------------------------------------------------------------------------


def signed(
    endpoint: str, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
) -> requests.Response:
    """A SigV4 header-signed request (``path`` already URL-encoded, query included)."""
    request = AWSRequest(method=method, url=f"{endpoint}{path}", headers=headers or {})
    request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(CREDENTIALS, "s3", REGION).add_auth(request)
    return requests.request(
        method, f"{endpoint}{path}", headers=dict(request.headers), timeout=60, **kw
    )


def presigned(endpoint: str, path: str) -> str:
    """A SigV4 presigned URL: signed by its query, variant included."""
    request = AWSRequest(method="GET", url=f"{endpoint}{path}")
    S3SigV4QueryAuth(CREDENTIALS, "s3", REGION, expires=300).add_auth(request)
    return request.url


def variant(
    gateway: GatewayProcess,
    bucket: str,
    key: str,
    name: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> requests.Response:
    return signed(gateway.endpoint, method, f"/{bucket}/{quote(key)}?variant={name}", headers)


def image_of(response: requests.Response) -> Any:
    assert response.status_code in (200, 206), response.text
    return decode(response.content)


def error_code(response: requests.Response) -> str:
    return etree.fromstring(response.content).findtext("Code")


def version_of(dsn: str, bucket: str, key: str) -> uuid.UUID:
    rows = db_fetch(
        dsn, "SELECT version_id FROM objects WHERE bucket = $1 AND key = $2", bucket, key
    )
    return rows[0]["version_id"]


def derivative_rows(dsn: str, version_id: uuid.UUID, settled: bool = True) -> list[asyncpg.Record]:
    """The derivative rows of an object version; with ``settled``, once none is pending: a
    render is answered before it is stored, and its row is marked ready just after."""
    deadline = time.monotonic() + 30
    while True:
        rows = db_fetch(
            dsn,
            "SELECT variant_key, status, attempts, storage_key, error FROM derivatives"
            " WHERE version_id = $1 ORDER BY variant_key",
            version_id,
        )
        pending = any(row["status"] == "pending" for row in rows)
        if not (settled and pending) or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def garbage_keys(dsn: str) -> set[str]:
    return {row["storage_key"] for row in db_fetch(dsn, "SELECT storage_key FROM garbage")}


def put(
    s3, bucket: str, key: str, data: bytes, content_type: str = "image/jpeg", **kw: Any
) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, **kw)


@pytest.fixture
def photo(s3, bucket: str) -> str:
    """A landscape JPEG (800x400, red top-left, green top-right) in a fresh bucket."""
    put(s3, bucket, "photos/cat.jpg", images.jpeg_with_orientation(1))
    return "photos/cat.jpg"


# --- the basics -----------------------------------------------------------------------------


def test_get_renders_the_preset(gateway, s3, bucket: str, photo: str, gateway_dsn: str) -> None:
    response = variant(gateway, bucket, photo, "thumb")
    image = image_of(response)
    assert (image.format, image.size) == ("WEBP", (64, 64))
    assert response.headers["Content-Type"] == "image/webp"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.headers["Cache-Control"] == VARIANT_PRESETS["thumb"]["cache_control"]
    assert response.headers["ETag"].startswith('"') and response.headers["Last-Modified"]
    assert "Vary" not in response.headers
    # The derivative is not the object, and no listing shows it.
    source = s3.head_object(Bucket=bucket, Key=photo)
    assert response.headers["ETag"] != source["ETag"]
    listed = s3.list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listed["Contents"]] == [photo]
    (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, photo))
    assert (row["status"], row["attempts"]) == ("ready", 1)
    assert row["variant_key"].startswith("thumb:webp:")
    # A second GET is served from storage: same bytes, no second attempt.
    again = variant(gateway, bucket, photo, "thumb")
    assert again.content == response.content
    assert again.headers["ETag"] == response.headers["ETag"]
    assert again.headers["Last-Modified"] == response.headers["Last-Modified"]
    (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, photo))
    assert row["attempts"] == 1


def test_head_answers_what_get_would(gateway, bucket: str, photo: str) -> None:
    head = variant(gateway, bucket, photo, "small", method="HEAD")
    assert head.status_code == 200
    assert head.content == b""
    get = variant(gateway, bucket, photo, "small")
    for name in ("ETag", "Content-Type", "Content-Length", "Last-Modified"):
        assert head.headers[name] == get.headers[name], name
    assert decode(get.content).size == (100, 50)


def test_the_source_cache_control_applies_when_the_preset_has_none(
    gateway, s3, bucket: str
) -> None:
    put(s3, bucket, "a.jpg", images.jpeg_with_orientation(1), CacheControl="max-age=600")
    assert variant(gateway, bucket, "a.jpg", "small").headers["Cache-Control"] == "max-age=600"
    # The preset's own wins.
    thumb = variant(gateway, bucket, "a.jpg", "thumb")
    assert thumb.headers["Cache-Control"] == VARIANT_PRESETS["thumb"]["cache_control"]


def test_range_and_conditional_requests(gateway, bucket: str, photo: str) -> None:
    full = variant(gateway, bucket, photo, "thumb")
    etag, size = full.headers["ETag"], len(full.content)
    part = variant(gateway, bucket, photo, "thumb", {"Range": "bytes=10-29"})
    assert part.status_code == 206
    assert part.content == full.content[10:30]
    assert part.headers["Content-Range"] == f"bytes 10-29/{size}"
    tail = variant(gateway, bucket, photo, "thumb", {"Range": "bytes=-7"})
    assert tail.content == full.content[-7:]
    beyond = variant(gateway, bucket, photo, "thumb", {"Range": f"bytes={size}-"})
    assert (beyond.status_code, error_code(beyond)) == (416, "InvalidRange")

    cached = variant(gateway, bucket, photo, "thumb", {"If-None-Match": etag})
    assert (cached.status_code, cached.content) == (304, b"")
    assert cached.headers["ETag"] == etag
    assert cached.headers["Cache-Control"] == VARIANT_PRESETS["thumb"]["cache_control"]
    stale = variant(gateway, bucket, photo, "thumb", {"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == full.content
    since = variant(
        gateway, bucket, photo, "thumb", {"If-Modified-Since": full.headers["Last-Modified"]}
    )
    assert since.status_code == 304
    mismatch = variant(gateway, bucket, photo, "thumb", {"If-Match": '"other"'})
    assert (mismatch.status_code, error_code(mismatch)) == (412, "PreconditionFailed")
    head = variant(gateway, bucket, photo, "thumb", {"If-None-Match": etag}, method="HEAD")
    assert head.status_code == 304


def test_unknown_or_disallowed_preset_is_invalid_argument(
    gateway, s3, bucket: str, photo: str
) -> None:
    for name in ("nope", "eager", ""):
        response = variant(gateway, bucket, photo, name)
        assert response.status_code == 400, name
        assert error_code(response) == "InvalidArgument"
        document = etree.fromstring(response.content)
        assert document.findtext("ArgumentName") == "variant"
    # A missing object is still NoSuchKey, and HEAD errors have no body.
    assert error_code(variant(gateway, bucket, "missing.jpg", "thumb")) == "NoSuchKey"
    assert variant(gateway, bucket, photo, "nope", method="HEAD").status_code == 400


def test_a_variant_is_read_only(gateway, s3, bucket: str, photo: str) -> None:
    path = f"/{bucket}/{photo}?variant=thumb"
    for method in ("PUT", "DELETE"):
        response = signed(gateway.endpoint, method, path, data=b"x" if method == "PUT" else None)
        assert response.status_code == 405, method
        assert error_code(response) == "MethodNotAllowed"
    assert s3.get_object(Bucket=bucket, Key=photo)["Body"].read() == images.jpeg_with_orientation(1)
    part = signed(gateway.endpoint, "GET", f"{path}&partNumber=1")
    assert (part.status_code, error_code(part)) == (400, "InvalidRequest")


# --- addressing and authentication ----------------------------------------------------------


def test_anonymous_on_the_public_bucket_path_and_virtual_host(gateway, s3) -> None:
    key = f"anon/{uuid.uuid4().hex}.jpg"
    put(s3, PUBLIC_BUCKET, key, images.jpeg_with_orientation(1))
    path_style = requests.get(f"{gateway.endpoint}/{PUBLIC_BUCKET}/{key}?variant=thumb", timeout=60)
    assert image_of(path_style).size == (64, 64)
    host = f"{PUBLIC_BUCKET}.s3.localtest:{gateway.port}"
    vhost = requests.get(
        f"{gateway.endpoint}/{key}?variant=thumb", headers={"Host": host}, timeout=60
    )
    assert vhost.content == path_style.content
    assert vhost.headers["ETag"] == path_style.headers["ETag"]
    head = requests.head(
        f"{gateway.endpoint}/{key}?variant=thumb", headers={"Host": host}, timeout=60
    )
    assert head.headers["Content-Length"] == str(len(path_style.content))


def test_anonymous_on_a_private_bucket_is_denied(gateway, bucket: str, photo: str) -> None:
    response = requests.get(f"{gateway.endpoint}/{bucket}/{photo}?variant=thumb", timeout=60)
    assert (response.status_code, error_code(response)) == (403, "AccessDenied")


def test_signed_virtual_host_style(gateway, bucket: str, photo: str) -> None:
    host = f"{bucket}.s3.localtest:{gateway.port}"
    request = AWSRequest(method="GET", url=f"http://{host}/{photo}?variant=small")
    request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(CREDENTIALS, "s3", REGION).add_auth(request)
    response = requests.get(
        f"{gateway.endpoint}/{photo}?variant=small",
        headers={**dict(request.headers), "Host": host},
        timeout=60,
    )
    assert image_of(response).size == (100, 50)


def test_presigned_urls_sigv4_and_sigv2(gateway, s3, bucket: str, photo: str) -> None:
    # SigV4 signs the whole query, variant included: the URL names one variant.
    url = presigned(gateway.endpoint, f"/{bucket}/{photo}?variant=thumb")
    v4 = requests.get(url, timeout=60)
    assert image_of(v4).size == (64, 64)
    tampered = requests.get(url.replace("variant=thumb", "variant=small"), timeout=60)
    assert (tampered.status_code, error_code(tampered)) == (403, "SignatureDoesNotMatch")
    # SigV2 (boto3's default presigned URL here) signs only S3's own sub-resources: a variant
    # parameter added to it reads a variant of the object the URL grants.
    v2_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": photo}, ExpiresIn=300
    )
    assert "Signature=" in v2_url and "AWSAccessKeyId=" in v2_url
    v2 = requests.get(f"{v2_url}&variant=thumb", timeout=60)
    assert v2.content == v4.content
    # Nothing request-specific enters the derivative: header auth gets the same blob.
    assert variant(gateway, bucket, photo, "thumb").headers["ETag"] == v4.headers["ETag"]


# --- format negotiation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "JPEG"),
        ("*/*", "JPEG"),
        ("image/webp,*/*", "WEBP"),
        ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "AVIF" if AVIF else "WEBP"),
        ("image/avif;q=0.5,image/webp", "WEBP"),
        ("image/webp;q=0, image/png", "JPEG"),
    ],
)
def test_format_auto_by_accept(
    gateway, bucket: str, photo: str, accept: str | None, expected: str
) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    response = variant(gateway, bucket, photo, "auto", headers)
    image = image_of(response)
    assert image.format == expected
    assert image.size == (96, 48)
    assert response.headers["Content-Type"] == f"image/{expected.lower()}"
    assert response.headers["Vary"] == "Accept"


def test_accept_headers_share_derivatives_by_format_class(
    gateway, bucket: str, photo: str, gateway_dsn: str
) -> None:
    """Many Accept headers, few derivatives: the header is reduced before it names one."""
    accepts = [
        "image/webp",
        "image/webp,*/*",
        "image/webp;q=0.9, image/jpeg",
        "text/html, image/webp",
        "*/*",
        "image/jpeg",
        "",
    ]
    etags = {
        accept: variant(gateway, bucket, photo, "auto", {"Accept": accept}) for accept in accepts
    }
    assert len({response.headers["ETag"] for response in etags.values()}) == 2
    rows = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, photo))
    assert sorted(row["variant_key"].split(":")[1] for row in rows) == ["legacy", "webp"]
    # A 304 repeats Vary, so a cache keeps revalidating per Accept.
    webp = etags["image/webp"]
    cached = variant(
        gateway,
        bucket,
        photo,
        "auto",
        {"Accept": "image/webp", "If-None-Match": webp.headers["ETag"]},
    )
    assert (cached.status_code, cached.headers["Vary"]) == (304, "Accept")
    other = variant(
        gateway,
        bucket,
        photo,
        "auto",
        {"Accept": "image/jpeg", "If-None-Match": webp.headers["ETag"]},
    )
    assert other.status_code == 200


def test_transparent_png_stays_png_when_auto_falls_back(gateway, s3, bucket: str) -> None:
    put(s3, bucket, "alpha.png", images.transparent_png(), "image/png")
    image = image_of(variant(gateway, bucket, "alpha.png", "auto", {"Accept": "image/jpeg"}))
    assert (image.format, image.mode) == ("PNG", "RGBA")
    assert image.getpixel((5, 20))[3] == 0


# --- what the renderer gets right, seen through the gateway ---------------------------------


def test_exif_rotation_is_applied(gateway, s3, bucket: str) -> None:
    # Orientation 6: the stored 800x400 image is displayed turned a quarter, 400x800.
    put(s3, bucket, "rotated.jpg", images.jpeg_with_orientation(6))
    image = image_of(variant(gateway, bucket, "rotated.jpg", "small")).convert("RGB")
    assert image.size == (100, 200)
    # The stored top-left corner (red) is displayed top-right; stored top-right (green)
    # bottom-right.
    assert close_to(image.getpixel((95, 4)), RED, 40)
    assert close_to(image.getpixel((95, 195)), GREEN, 40)
    assert close_to(image.getpixel((50, 100)), BLUE, 40)
    # Metadata is stripped: no EXIF left to rotate it a second time.
    assert not decode(variant(gateway, bucket, "rotated.jpg", "boxed").content).getexif()


def test_cmyk_jpeg_becomes_rgb(gateway, s3, bucket: str) -> None:
    put(s3, bucket, "cmyk.jpg", images.cmyk_jpeg((0, 255, 255, 0)))
    image = image_of(variant(gateway, bucket, "cmyk.jpg", "boxed"))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (120, 80))
    # 64x48 contained in 120x80: 107x80 in the middle, white bars left and right.
    assert close_to(image.getpixel((60, 40)), RED, 40)
    assert close_to(image.getpixel((2, 40)), WHITE, 8)


def test_png_alpha_is_kept(gateway, s3, bucket: str) -> None:
    put(s3, bucket, "alpha.png", images.transparent_png((200, 100)), "image/png")
    image = image_of(variant(gateway, bucket, "alpha.png", "small"))
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (100, 50))
    assert image.getpixel((10, 25))[3] == 0
    assert image.getpixel((90, 25)) == (255, 255, 255, 255)
    # WebP keeps it too; JPEG puts the background behind it.
    webp = image_of(variant(gateway, bucket, "alpha.png", "thumb"))
    assert webp.mode == "RGBA" and webp.getpixel((2, 32))[3] <= 8
    jpeg = image_of(variant(gateway, bucket, "alpha.png", "boxed"))
    assert close_to(jpeg.getpixel((20, 40)), WHITE, 8)


def test_palette_gif(gateway, s3, bucket: str) -> None:
    put(s3, bucket, "palette.gif", images.palette_gif(transparent=True), "image/gif")
    image = image_of(variant(gateway, bucket, "palette.gif", "small"))
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (80, 40))
    assert image.getpixel((10, 20))[3] == 0
    assert close_to(image.getpixel((70, 20))[:3], BLUE, 8)


def test_sixteen_bit_png(gateway, s3, bucket: str) -> None:
    put(s3, bucket, "deep.png", images.sixteen_bit_png(200), "image/png")
    image = image_of(variant(gateway, bucket, "deep.png", "small"))
    assert (image.mode, image.size) == ("L", (100, 2))
    # A ramp scaled to 8 bits, not clipped to white.
    assert image.getpixel((0, 0)) <= 6
    assert abs(image.getpixel((50, 0)) - 128) <= 8
    assert image.getpixel((99, 0)) >= 248


def test_multipart_source(gateway, s3, bucket: str) -> None:
    """A source completed from parts is read across its part blobs."""
    data = encode(images.marked((2000, 1000)), "PNG")
    data += b"\0" * max(0, 5 * 1024**2 + 1 - len(data))  # trailing bytes PNG readers ignore
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts.png", ContentType="image/png")
    cut = 5 * 1024**2
    parts = []
    for number, chunk in enumerate((data[:cut], data[cut:]), start=1):
        result = s3.upload_part(
            Bucket=bucket,
            Key="parts.png",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=chunk,
        )
        parts.append({"PartNumber": number, "ETag": result["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="parts.png",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    image = image_of(variant(gateway, bucket, "parts.png", "small")).convert("RGB")
    assert image.size == (100, 50)
    assert close_to(image.getpixel((2, 2)), RED, 40)


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "code"),
    [
        (images.truncated_jpeg(), "image/jpeg", "InvalidImage"),
        (images.png_header_only(100_000, 100_000), "image/png", "ImageTooLarge"),
        (b"just some text, not an image\n" * 10, "text/plain", "UnsupportedImage"),
    ],
    ids=["truncated", "bomb", "not-an-image"],
)
def test_failures_are_recorded_and_not_rendered_again(
    gateway, s3, bucket: str, gateway_dsn: str, data: bytes, content_type: str, code: str
) -> None:
    put(s3, bucket, "bad", data, content_type)
    first = variant(gateway, bucket, "bad", "thumb")
    assert (first.status_code, error_code(first)) == (400, code), first.text
    message = etree.fromstring(first.content).findtext("Message")
    for _ in range(3):
        again = variant(gateway, bucket, "bad", "thumb")
        assert (again.status_code, error_code(again)) == (400, code)
        assert etree.fromstring(again.content).findtext("Message") == message
    head = variant(gateway, bucket, "bad", "thumb", method="HEAD")
    assert (head.status_code, head.content) == (400, b"")
    (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, "bad"))
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["error"].startswith(f"{code}: ")
    # The object itself is untouched and still readable.
    assert s3.get_object(Bucket=bucket, Key="bad")["Body"].read() == data


# --- rendered once --------------------------------------------------------------------------


def concurrent_gets(urls: list[str], verify: str | bool = True) -> list[requests.Response]:
    barrier = threading.Barrier(len(urls))

    def get(url: str) -> requests.Response:
        barrier.wait()
        return requests.get(url, timeout=120, verify=verify)

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(get, urls))


def test_fifty_concurrent_first_gets_render_once(gateway, s3, gateway_dsn: str) -> None:
    key = f"crowd/{uuid.uuid4().hex}.jpg"
    put(s3, PUBLIC_BUCKET, key, encode(images.marked((3000, 2000)), "JPEG", quality=90))
    url = f"{gateway.endpoint}/{PUBLIC_BUCKET}/{key}?variant=thumb"
    responses = concurrent_gets([url] * 50)
    assert {response.status_code for response in responses} == {200}
    assert len({response.content for response in responses}) == 1
    assert len({response.headers["ETag"] for response in responses}) == 1
    rows = derivative_rows(gateway_dsn, version_of(gateway_dsn, PUBLIC_BUCKET, key))
    thumbs = [row for row in rows if row["variant_key"].startswith("thumb:")]
    assert [(row["status"], row["attempts"]) for row in thumbs] == [("ready", 1)]


def test_two_gateway_processes_render_once(
    gateway, tls_gateway, ca_bundle: str, s3, gateway_dsn: str
) -> None:
    key = f"crowd/{uuid.uuid4().hex}.jpg"
    put(s3, PUBLIC_BUCKET, key, encode(images.marked((3000, 2000)), "JPEG", quality=90))
    urls = [
        f"{endpoint}/{PUBLIC_BUCKET}/{key}?variant=small"
        for endpoint in (gateway.endpoint, tls_gateway.endpoint)
        for _ in range(25)
    ]
    responses = concurrent_gets(urls, verify=ca_bundle)
    assert {response.status_code for response in responses} == {200}
    assert len({response.content for response in responses}) == 1
    rows = derivative_rows(gateway_dsn, version_of(gateway_dsn, PUBLIC_BUCKET, key))
    smalls = [row for row in rows if row["variant_key"].startswith("small:")]
    assert [(row["status"], row["attempts"]) for row in smalls] == [("ready", 1)]


# --- retirement -----------------------------------------------------------------------------


def replace_by_put(s3, bucket: str, key: str) -> None:
    put(s3, bucket, key, images.jpeg_with_orientation(6))


def replace_by_copy(s3, bucket: str, key: str) -> None:
    put(s3, bucket, "other.jpg", images.jpeg_with_orientation(6))
    s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": "other.jpg"})


def replace_by_multipart(s3, bucket: str, key: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="image/jpeg")
    result = s3.upload_part(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=images.jpeg_with_orientation(6),
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": result["ETag"]}]},
    )


@pytest.mark.parametrize("replace", [replace_by_put, replace_by_copy, replace_by_multipart])
def test_overwrite_retires_and_renders_anew(
    gateway, s3, bucket: str, photo: str, gateway_dsn: str, replace: Any
) -> None:
    before = variant(gateway, bucket, photo, "small")
    assert image_of(before).size == (100, 50)
    old_version = version_of(gateway_dsn, bucket, photo)
    (old,) = derivative_rows(gateway_dsn, old_version)
    replace(s3, bucket, photo)
    # Retired in the transaction that replaced the object: row gone, blob listed as garbage.
    assert derivative_rows(gateway_dsn, old_version) == []
    assert old["storage_key"] in garbage_keys(gateway_dsn)
    after = variant(gateway, bucket, photo, "small")
    assert image_of(after).size == (100, 200)  # the new source is the rotated one
    assert after.headers["ETag"] != before.headers["ETag"]
    (new,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, photo))
    assert new["status"] == "ready" and new["storage_key"] != old["storage_key"]


@pytest.mark.parametrize("how", ["DeleteObject", "DeleteObjects"])
def test_delete_puts_derivative_blobs_in_garbage(
    gateway, s3, bucket: str, photo: str, gateway_dsn: str, how: str
) -> None:
    variant(gateway, bucket, photo, "thumb")
    variant(gateway, bucket, photo, "small")
    version = version_of(gateway_dsn, bucket, photo)
    rendered = {row["storage_key"] for row in derivative_rows(gateway_dsn, version)}
    assert len(rendered) == 2
    if gateway.profile != UPSTREAM:
        # Stored beside the objects of the bucket's profile.
        assert all(path.exists() for key in rendered for path in blob_files(gateway, key))
    if how == "DeleteObject":
        s3.delete_object(Bucket=bucket, Key=photo)
    else:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": photo}]})
    assert derivative_rows(gateway_dsn, version) == []
    assert rendered <= garbage_keys(gateway_dsn)
    assert error_code(variant(gateway, bucket, photo, "thumb")) == "NoSuchKey"


# --- on_miss: original ----------------------------------------------------------------------


def test_on_miss_original_answers_the_original_while_rendering(
    gateway, s3, bucket: str, gateway_dsn: str
) -> None:
    original = images.jpeg_with_orientation(1)
    put(s3, bucket, "first.jpg", original)
    first = variant(gateway, bucket, "first.jpg", "first-original")
    assert first.status_code == 200
    assert first.content == original
    assert first.headers["Content-Type"] == "image/jpeg"
    # Not to be kept by a cache under the variant's URL.
    assert first.headers["Cache-Control"] == "no-store"
    deadline = time.monotonic() + 30
    while True:
        later = variant(gateway, bucket, "first.jpg", "first-original")
        if later.headers["Content-Type"] == "image/webp":
            break
        assert time.monotonic() < deadline, "the background render never landed"
        time.sleep(0.1)
    assert decode(later.content).size == (50, 25)
    assert "no-store" not in later.headers.get("Cache-Control", "")
    (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, "first.jpg"))
    assert (row["status"], row["attempts"]) == ("ready", 1)


def test_on_miss_original_answers_a_recorded_failure(gateway, s3, bucket: str) -> None:
    put(s3, bucket, "broken.jpg", images.truncated_jpeg())
    first = variant(gateway, bucket, "broken.jpg", "first-original")
    assert first.content == images.truncated_jpeg()
    deadline = time.monotonic() + 30
    while (response := variant(gateway, bucket, "broken.jpg", "first-original")).status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert (response.status_code, error_code(response)) == (400, "InvalidImage")


# --- eager presets --------------------------------------------------------------------------


def wait_for_ready(
    dsn: str, version: uuid.UUID, prefix: str, timeout: float = 30
) -> asyncpg.Record:
    deadline = time.monotonic() + timeout
    while True:
        rows = [
            row
            for row in derivative_rows(dsn, version, settled=False)
            if row["variant_key"].startswith(prefix)
        ]
        if rows and rows[0]["status"] != "pending":
            return rows[0]
        assert time.monotonic() < deadline, f"no {prefix} derivative of {version}"
        time.sleep(0.1)


def test_eager_presets_render_after_upload(gateway, s3, gateway_dsn: str) -> None:
    key = f"eager/{uuid.uuid4().hex}.jpg"
    put(s3, EAGER_BUCKET, key, images.jpeg_with_orientation(1))
    version = version_of(gateway_dsn, EAGER_BUCKET, key)
    row = wait_for_ready(gateway_dsn, version, "eager:")
    assert (row["status"], row["attempts"]) == ("ready", 1)
    # Only the eager preset: thumb is allowed on the bucket but waits for its first GET.
    assert [r["variant_key"].split(":")[0] for r in derivative_rows(gateway_dsn, version)] == [
        "eager"
    ]
    assert db_fetch(gateway_dsn, "SELECT * FROM variant_jobs WHERE version_id = $1", version) == []
    # The first GET is already a hit.
    response = variant(gateway, EAGER_BUCKET, key, "eager")
    assert image_of(response).size == (40, 40)
    (row,) = derivative_rows(gateway_dsn, version)
    assert row["attempts"] == 1


@LOCAL_ONLY
def test_eager_jobs_of_replaced_versions_are_dropped(gateway, s3, gateway_dsn: str) -> None:
    key = f"eager/{uuid.uuid4().hex}.jpg"
    for _ in range(5):
        put(s3, EAGER_BUCKET, key, images.jpeg_with_orientation(1))
    version = version_of(gateway_dsn, EAGER_BUCKET, key)
    wait_for_ready(gateway_dsn, version, "eager:")
    deadline = time.monotonic() + 30
    while db_fetch(gateway_dsn, "SELECT 1 FROM variant_jobs WHERE key = $1", key):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Whatever earlier versions got rendered was retired with them.
    live = db_fetch(
        gateway_dsn,
        "SELECT d.version_id FROM derivatives d WHERE d.variant_key LIKE 'eager:%'"
        " AND d.version_id <> $1 AND NOT EXISTS"
        " (SELECT 1 FROM objects o WHERE o.version_id = d.version_id)"
        " AND d.status = 'ready'",
        version,
    )
    assert live == []


# --- a changed configuration ----------------------------------------------------------------


@pytest.fixture
def reconfigured(tmp_path: Path, gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    """Another gateway over the same database and storage: its thumb preset edited, its source
    size limit lowered, and one render worker with no queue."""
    presets = {**VARIANT_PRESETS, "thumb": {**VARIANT_PRESETS["thumb"], "width": 48, "height": 48}}
    process = gateway.sibling(
        tmp_path / "reconfigured.yaml",
        variants=presets,
        limits={
            "garbage_grace_seconds": 3600,
            "max_source_bytes": 2 * 1024**2,
            "render_workers": 1,
            "render_queue": 0,
        },
    )
    with process.running():
        yield process


def test_a_changed_preset_renders_anew(
    gateway, reconfigured, s3, bucket: str, photo: str, gateway_dsn: str
) -> None:
    before = variant(gateway, bucket, photo, "thumb")
    assert image_of(before).size == (64, 64)
    after = variant(reconfigured, bucket, photo, "thumb")
    assert image_of(after).size == (48, 48)
    assert after.headers["ETag"] != before.headers["ETag"]
    rows = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, photo))
    assert len({row["variant_key"] for row in rows}) == 2
    assert all(row["variant_key"].startswith("thumb:webp:") for row in rows)
    # Settings that do not shape the pixels (here none changed for small) share derivatives.
    assert (
        variant(reconfigured, bucket, photo, "small").content
        == variant(gateway, bucket, photo, "small").content
    )


def test_a_source_over_the_size_limit(reconfigured, s3, bucket: str) -> None:
    # A valid image padded past the limit: refused by its size alone, before it is read.
    small = encode(images.marked((200, 200)), "PNG")
    big = small + b"\0" * (2 * 1024**2 + 1 - len(small))
    put(s3, bucket, "big.png", big, "image/png")
    response = variant(reconfigured, bucket, "big.png", "thumb")
    assert (response.status_code, error_code(response)) == (400, "ImageTooLarge")
    assert "2097152 bytes" in etree.fromstring(response.content).findtext("Message")


def test_overload_is_slowdown_and_records_nothing(
    reconfigured, s3, bucket: str, gateway_dsn: str
) -> None:
    # Full-size decodes (PNG has no DCT scaling) keep the one worker busy for a while.
    source = encode(images.marked((4000, 3000)), "PNG")
    keys = [f"load/{index}.png" for index in range(8)]
    for key in keys:
        put(s3, bucket, key, source, "image/png")
    urls = [presigned(reconfigured.endpoint, f"/{bucket}/{key}?variant=small") for key in keys]
    responses = concurrent_gets(urls)
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    refused = [response for response in responses if response.status_code == 503]
    assert {error_code(response) for response in refused} == {"SlowDown"}
    # A refusal is not the image's fault: nothing recorded, the next GET renders it.
    for key in keys:
        assert image_of(requests.get(urls[keys.index(key)], timeout=60)).size == (100, 75)
        (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, key))
        assert (row["status"], row["attempts"]) == ("ready", 1)
