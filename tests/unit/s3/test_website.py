"""Website documents: which key a website path names, validation, the PutBucketWebsite body
and GetBucketWebsite's answer, and the HTML of an error page."""

from __future__ import annotations

import pytest

from gateway.s3 import website
from gateway.s3.errors import InvalidArgument, MalformedXML, NotImplemented, S3Error
from gateway.s3.website import WebsiteConfiguration, error_page
from gateway.s3.xml import website_configuration
from gateway.s3.xmlbody import parse_website_configuration

SITE = WebsiteConfiguration("index.html", "404.html")
NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def body(inner: str, ns: str = NS) -> bytes:
    return f"<WebsiteConfiguration{ns}>{inner}</WebsiteConfiguration>".encode()


INDEX = "<IndexDocument><Suffix>index.html</Suffix></IndexDocument>"


@pytest.mark.parametrize(
    ("path_key", "key", "folder_index"),
    [
        ("", "index.html", None),
        ("docs/", "docs/index.html", None),
        ("docs", "docs", "docs/index.html"),
        ("docs/intro.html", "docs/intro.html", "docs/intro.html/index.html"),
        # Keys are taken as they are: an empty segment is a folder named "".
        ("a//", "a//index.html", None),
        ("/", "/index.html", None),
    ],
)
def test_key_of_a_path(path_key: str, key: str, folder_index: str | None) -> None:
    assert SITE.key_of(path_key) == key
    assert SITE.directory_index(path_key) == folder_index


@pytest.mark.parametrize("config", [SITE, WebsiteConfiguration("home.htm")])
def test_json_round_trip(config: WebsiteConfiguration) -> None:
    assert WebsiteConfiguration.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "config",
    [
        WebsiteConfiguration(""),
        WebsiteConfiguration("a/index.html"),
        WebsiteConfiguration("/"),
        WebsiteConfiguration("index.html", ""),
    ],
)
def test_validate_refuses(config: WebsiteConfiguration) -> None:
    with pytest.raises(InvalidArgument):
        website.validate(config)


def test_validate_accepts_an_error_document_in_a_folder() -> None:
    website.validate(WebsiteConfiguration("index.html", "errors/404.html"))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (body(INDEX), WebsiteConfiguration("index.html")),
        (body(INDEX, ns=""), WebsiteConfiguration("index.html")),
        (
            body(INDEX + "<ErrorDocument><Key>errors/404.html</Key></ErrorDocument>"),
            WebsiteConfiguration("index.html", "errors/404.html"),
        ),
    ],
)
def test_parse(document: bytes, expected: WebsiteConfiguration) -> None:
    assert parse_website_configuration(document) == expected


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (b"not xml", MalformedXML),
        (b"<CORSConfiguration/>", MalformedXML),
        (body(""), MalformedXML),
        (body("<IndexDocument/>"), MalformedXML),
        (body("<ErrorDocument><Key>404.html</Key></ErrorDocument>"), MalformedXML),
        (body(INDEX + "<ErrorDocument/>"), MalformedXML),
        (body("<IndexDocument><Suffix></Suffix></IndexDocument>"), InvalidArgument),
        (body("<IndexDocument><Suffix>a/b.html</Suffix></IndexDocument>"), InvalidArgument),
        (body(INDEX + "<ErrorDocument><Key></Key></ErrorDocument>"), InvalidArgument),
        (
            body("<RedirectAllRequestsTo><HostName>x.example</HostName></RedirectAllRequestsTo>"),
            NotImplemented,
        ),
        (
            body(INDEX + "<RoutingRules><RoutingRule><Redirect/></RoutingRule></RoutingRules>"),
            NotImplemented,
        ),
    ],
)
def test_parse_refuses(document: bytes, error: type[S3Error]) -> None:
    with pytest.raises(error):
        parse_website_configuration(document)


@pytest.mark.parametrize(
    "config",
    [SITE, WebsiteConfiguration("index.html"), WebsiteConfiguration("é<&>.html", "a b/\r.html")],
)
def test_get_bucket_website_reads_back_as_put(config: WebsiteConfiguration) -> None:
    assert parse_website_configuration(website_configuration(config)) == config


def test_error_page() -> None:
    page = error_page(404, "NoSuchKey", "The specified key does not exist.", "REQ1", Key="<x>")
    assert "<title>404 Not Found</title>" in page and "<h1>404 Not Found</h1>" in page
    # Code, message, then the details, then the request id; every value escaped.
    assert page.index("Code: NoSuchKey") < page.index("Key: &lt;x&gt;") < page.index("REQ1")
    assert "<x>" not in page
    assert "<title>405 Method Not Allowed</title>" in error_page(405, "M", "m", "R")
