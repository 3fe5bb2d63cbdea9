"""Static websites: PutBucketWebsite/GetBucketWebsite/DeleteBucketWebsite through boto3, and
website hosts (``<bucket>.<website domain>``) serving index and error documents in HTML."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import LOCAL, SITE_BUCKET, UPSTREAM, WEBSITE_DOMAIN, GatewayProcess, S3Client
from tests.s3errors import error_of
from tests.test_awscli import AwsCli, cli_env
from tests.unit.variants import images

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]

WEBSITE = {"IndexDocument": {"Suffix": "index.html"}, "ErrorDocument": {"Key": "404.html"}}


def visit(
    gateway: GatewayProcess, bucket: str, path: str, method: str = "GET", **headers: str
) -> requests.Response:
    """A browser's request to the bucket's website host (resolved to the gateway)."""
    return requests.request(
        method,
        gateway.endpoint + path,
        headers={"Host": f"{bucket}.{WEBSITE_DOMAIN}", **headers},
        allow_redirects=False,
        timeout=10,
    )


def put_html(s3: S3Client, bucket: str, key: str, text: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode(), ContentType="text/html")


@pytest.fixture(scope="module")
def site(s3: S3Client) -> Iterator[str]:
    """The YAML's website bucket, with a home page, a folder with its own index, a page
    without one, a stylesheet, an image and the error document."""
    put_html(s3, SITE_BUCKET, "index.html", "<h1>home</h1>")
    put_html(s3, SITE_BUCKET, "docs/index.html", "<h1>docs</h1>")
    put_html(s3, SITE_BUCKET, "docs/intro.html", "<h1>intro</h1>")
    put_html(s3, SITE_BUCKET, "404.html", "<h1>lost?</h1>")
    s3.put_object(Bucket=SITE_BUCKET, Key="style.css", Body=b"h1 {}", ContentType="text/css")
    s3.put_object(Bucket=SITE_BUCKET, Key="cat.png", Body=images.encode(images.marked(), "PNG"))
    yield SITE_BUCKET


def test_index_documents_and_folders(gateway: GatewayProcess, site: str) -> None:
    home = visit(gateway, site, "/")
    assert home.status_code == 200
    assert home.text == "<h1>home</h1>" and home.headers["Content-Type"] == "text/html"
    assert visit(gateway, site, "/docs/").text == "<h1>docs</h1>"
    assert visit(gateway, site, "/docs/intro.html").text == "<h1>intro</h1>"
    assert visit(gateway, site, "/style.css").headers["Content-Type"] == "text/css"
    # A folder asked for without its slash is redirected, so relative links resolve in it.
    redirect = visit(gateway, site, "/docs")
    assert (redirect.status_code, redirect.headers["Location"]) == (302, "/docs/")
    # HEAD, Range and conditional requests as for any object.
    head = visit(gateway, site, "/", "HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len("<h1>home</h1>"))
    assert visit(gateway, site, "/", Range="bytes=1-2").content == b"h1"
    assert visit(gateway, site, "/", **{"If-None-Match": home.headers["ETag"]}).status_code == 304
    # Variants, for the site's <img> tags.
    thumb = visit(gateway, site, "/cat.png?variant=thumb")
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/webp"


def test_missing_pages_serve_the_error_document(gateway: GatewayProcess, site: str) -> None:
    for path in ("/nothing-here", "/docs/nothing.html", "/empty-folder/"):
        missing = visit(gateway, site, path)
        assert missing.status_code == 404, path
        assert missing.text == "<h1>lost?</h1>"
        assert missing.headers["Content-Type"] == "text/html"
    assert visit(gateway, site, "/nothing-here", "HEAD").status_code == 404
    # Conditions of the request are for the page asked for, not the error document.
    assert visit(gateway, site, "/nothing", **{"If-None-Match": "*"}).status_code == 404
    # OPTIONS is a CORS preflight, as on the API host (this bucket has no CORS rules).
    preflight = visit(
        gateway,
        site,
        "/index.html",
        "OPTIONS",
        Origin="https://other.example",
        **{"Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 403 and "AccessForbidden" in preflight.text
    refused = visit(gateway, site, "/index.html", "PUT")
    assert refused.status_code == 405 and refused.headers["Allow"] == "GET, HEAD"
    assert "MethodNotAllowed" in refused.text and refused.headers["Content-Type"].startswith(
        "text/html"
    )


def test_website_paths_and_queries(gateway: GatewayProcess, site: str) -> None:
    # Of the query only the variant counts: whatever else a link carries is ignored.
    assert visit(gateway, site, "/?utm_source=%FF&v=2").text == "<h1>home</h1>"
    assert visit(gateway, site, "/cat.png?variant=th%75mb&x").headers["Content-Type"] == (
        "image/webp"
    )
    # A path or a variant that cannot be decoded is an HTML error too.
    for path in ("/bad%FF.html", "/cat.png?variant=%FF"):
        bad = visit(gateway, site, path)
        assert bad.status_code == 400 and "InvalidURI" in bad.text, path
        assert bad.headers["Content-Type"].startswith("text/html")
        assert "<title>400 Bad Request</title>" in bad.text


def test_cors_headers_on_website_hosts(gateway: GatewayProcess, s3: S3Client, bucket: str) -> None:
    origin = "https://pages.example"
    s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={"CORSRules": [{"AllowedOrigins": [origin], "AllowedMethods": ["GET"]}]},
    )
    s3.put_bucket_website(
        Bucket=bucket, WebsiteConfiguration={"IndexDocument": {"Suffix": "i.html"}}
    )
    s3.put_object(Bucket=bucket, Key="i.html", Body=b"<p>hi</p>", ACL="public-read")
    # An anonymous reader who may not list the bucket learns nothing of what is missing: 403.
    for path, status in (("/", 200), ("/missing.html", 403)):
        answer = visit(gateway, bucket, path, Origin=origin)
        assert answer.status_code == status, path
        assert answer.headers["Access-Control-Allow-Origin"] == origin, path
    assert (
        "Access-Control-Allow-Origin"
        not in visit(gateway, bucket, "/", Origin="https://x.example").headers
    )


def test_website_hosts_are_anonymous_and_html(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    # No website configuration yet: S3's 404 page.
    none = visit(gateway, bucket, "/")
    assert none.status_code == 404 and "NoSuchWebsiteConfiguration" in none.text
    assert none.headers["Content-Type"].startswith("text/html")
    unknown = visit(gateway, "no-such-bucket-here", "/")
    assert unknown.status_code == 404 and "NoSuchBucket" in unknown.text

    s3.put_bucket_website(Bucket=bucket, WebsiteConfiguration=WEBSITE)
    put_html(s3, bucket, "index.html", "<h1>private</h1>")
    put_html(s3, bucket, "404.html", "<h1>private 404</h1>")
    # A private bucket's pages are not the public's, signed or not: website hosts take no
    # credentials.
    closed = visit(gateway, bucket, "/")
    assert closed.status_code == 403 and "AccessDenied" in closed.text
    assert "private" not in closed.text

    # Opened by a policy: pages, and the error document for what is missing.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert visit(gateway, bucket, "/").text == "<h1>private</h1>"
    missing = visit(gateway, bucket, "/gone.html")
    assert (missing.status_code, missing.text) == (404, "<h1>private 404</h1>")

    # The S3 API host keeps S3's semantics: a listing, in XML.
    listing = requests.get(f"{gateway.endpoint}/{bucket}/", timeout=10)
    assert listing.status_code == 403 and listing.headers["Content-Type"] == "application/xml"


def test_website_configuration_through_the_api(s3: S3Client, bucket: str) -> None:
    with pytest.raises(ClientError) as none:
        s3.get_bucket_website(Bucket=bucket)
    assert error_of(none) == (404, "NoSuchWebsiteConfiguration")
    s3.put_bucket_website(Bucket=bucket, WebsiteConfiguration=WEBSITE)
    got = s3.get_bucket_website(Bucket=bucket)
    assert got["IndexDocument"] == {"Suffix": "index.html"}
    assert got["ErrorDocument"] == {"Key": "404.html"}
    s3.put_bucket_website(
        Bucket=bucket, WebsiteConfiguration={"IndexDocument": {"Suffix": "home.htm"}}
    )
    assert "ErrorDocument" not in s3.get_bucket_website(Bucket=bucket)
    s3.delete_bucket_website(Bucket=bucket)
    with pytest.raises(ClientError):
        s3.get_bucket_website(Bucket=bucket)


@pytest.mark.parametrize(
    ("configuration", "expected"),
    [
        ({"RedirectAllRequestsTo": {"HostName": "example.com"}}, (501, "NotImplemented")),
        (
            {
                "IndexDocument": {"Suffix": "index.html"},
                "RoutingRules": [{"Redirect": {"HostName": "example.com"}}],
            },
            (501, "NotImplemented"),
        ),
        ({"IndexDocument": {"Suffix": "a/index.html"}}, (400, "InvalidArgument")),
        ({"IndexDocument": {"Suffix": ""}}, (400, "InvalidArgument")),
        ({"ErrorDocument": {"Key": "404.html"}}, (400, "MalformedXML")),
    ],
)
def test_website_configurations_refused(
    s3: S3Client, bucket: str, configuration: dict[str, object], expected: tuple[int, str]
) -> None:
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_website(Bucket=bucket, WebsiteConfiguration=configuration)  # type: ignore[arg-type]
    assert error_of(refused) == expected
    with pytest.raises(ClientError):
        s3.get_bucket_website(Bucket=bucket)


def test_yaml_website_cannot_be_changed_through_the_api(
    gateway: GatewayProcess, s3: S3Client
) -> None:
    got = s3.get_bucket_website(Bucket=SITE_BUCKET)
    assert got["IndexDocument"] == {"Suffix": "index.html"}
    for change in (
        lambda: s3.put_bucket_website(Bucket=SITE_BUCKET, WebsiteConfiguration=WEBSITE),
        lambda: s3.delete_bucket_website(Bucket=SITE_BUCKET),
    ):
        with pytest.raises(ClientError) as refused:
            change()
        assert error_of(refused) == (400, "InvalidRequest")
    # Anonymous writers get nothing.
    url = f"{gateway.endpoint}/{SITE_BUCKET}?website"
    assert requests.delete(url, timeout=10).status_code == 403


def test_aws_s3_website_command(gateway: GatewayProcess, bucket: str, tmp_path: Path) -> None:
    aws = AwsCli(gateway.endpoint, cli_env(tmp_path), None, True)
    aws.run("s3", "website", f"s3://{bucket}/", "--index-document", "home.html")
    assert aws.json("s3api", "get-bucket-website", "--bucket", bucket)["IndexDocument"] == {
        "Suffix": "home.html"
    }
