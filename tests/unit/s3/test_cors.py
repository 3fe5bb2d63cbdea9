"""CORS rules: matching, wildcards, validation, the headers of an answer, and their XML."""

from __future__ import annotations

import pytest

from gateway.s3 import cors
from gateway.s3.cors import CorsRule, find_rule, merge_vary, requested_headers
from gateway.s3.errors import InvalidRequest, MalformedXML, S3Error
from gateway.s3.xml import cors_configuration
from gateway.s3.xmlbody import parse_cors_configuration

APP = CorsRule(
    allowed_origins=("https://app.example", "https://*.app.example"),
    allowed_methods=("GET", "PUT"),
    allowed_headers=("content-type", "X-Amz-*"),
    expose_headers=("ETag",),
    max_age_seconds=60,
    id="app",
)
ANYONE = CorsRule(allowed_origins=("*",), allowed_methods=("GET",))


@pytest.mark.parametrize(
    ("origin", "method", "headers", "expected"),
    [
        ("https://app.example", "PUT", [], APP),
        ("https://a.b.app.example", "GET", ["Content-Type"], APP),
        ("https://app.example", "PUT", ["x-amz-date", "X-AMZ-CONTENT-SHA256"], APP),
        ("https://app.example", "GET", ["authorization"], None),
        ("https://app.example", "PUT", ["authorization"], None),
        ("http://app.example", "PUT", [], None),
        ("https://app.example.evil", "PUT", [], None),
        ("https://evil.example", "GET", [], ANYONE),
        ("https://evil.example", "DELETE", [], None),
        # Methods are compared as sent: the browser upper-cases them.
        ("https://app.example", "put", [], None),
    ],
)
def test_find_rule(origin: str, method: str, headers: list[str], expected: CorsRule | None) -> None:
    assert find_rule([APP, ANYONE], origin, method, headers) is expected


def test_a_wildcard_matches_any_run_of_characters_but_nothing_else() -> None:
    rule = CorsRule(allowed_origins=("https://*.example",), allowed_methods=("GET",))
    assert rule.allows("https://x.example", "GET")
    assert rule.allows("https://.example", "GET")
    assert not rule.allows("https://x.example.org", "GET")
    assert not rule.allows("https://xexample", "GET")


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ([], MalformedXML),
        ([ANYONE] * 101, MalformedXML),
        ([CorsRule(("*",), ("PATCH",))], InvalidRequest),
        ([CorsRule(("https://*.*.example",), ("GET",))], InvalidRequest),
        ([CorsRule(("*",), ("GET",), allowed_headers=("x-*-*",))], InvalidRequest),
        ([CorsRule((), ("GET",))], MalformedXML),
        ([CorsRule(("*",), ("GET",), max_age_seconds=-1)], MalformedXML),
    ],
)
def test_validate_refuses(rules: list[CorsRule], error: type[S3Error]) -> None:
    with pytest.raises(error):
        cors.validate(rules)


def test_preflight_headers() -> None:
    headers = cors.preflight_headers(APP, "https://x.app.example", "PUT", ["content-type"])
    assert headers == {
        "Access-Control-Allow-Origin": "https://x.app.example",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "GET, PUT",
        "Access-Control-Allow-Headers": "content-type",
        "Access-Control-Max-Age": "60",
        "Vary": cors.VARY,
    }
    assert (
        cors.preflight_headers(ANYONE, "https://e.example", "GET", [])[
            "Access-Control-Allow-Origin"
        ]
        == "*"
    )


def test_response_headers_echo_the_origin_for_credentialed_requests() -> None:
    assert cors.response_headers(ANYONE, "https://e.example", credentialed=False) == {
        "Access-Control-Allow-Origin": "*",
    }
    credentialed = cors.response_headers(ANYONE, "https://e.example", credentialed=True)
    assert credentialed["Access-Control-Allow-Origin"] == "https://e.example"
    assert credentialed["Access-Control-Allow-Credentials"] == "true"
    assert (
        cors.response_headers(APP, "https://app.example", False)["Access-Control-Expose-Headers"]
        == "ETag"
    )


def test_helpers() -> None:
    assert requested_headers(" Content-Type ,x-amz-date,, ") == ["content-type", "x-amz-date"]
    assert requested_headers(None) == []
    assert merge_vary("Accept", cors.VARY) == f"Accept, {cors.VARY}"
    assert merge_vary("origin", "Origin, Accept") == "origin, Accept"
    assert merge_vary(None, "Origin") == "Origin"


def test_xml_round_trip() -> None:
    document = cors_configuration([APP, ANYONE])
    assert parse_cors_configuration(document) == [APP, ANYONE]
    assert CorsRule.from_json(APP.to_json()) == APP


@pytest.mark.parametrize(
    "body",
    [
        b"<CORSConfiguration/>",
        b"<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule>"
        b"</CORSConfiguration>",
        b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>"
        b"<AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>soon</MaxAgeSeconds>"
        b"</CORSRule></CORSConfiguration>",
        b"<CORSConfiguration><CORSRule>",
    ],
)
def test_malformed_documents(body: bytes) -> None:
    with pytest.raises(MalformedXML):
        parse_cors_configuration(body)
