"""Canned ACLs, AccessControlPolicy bodies and the bucket-policy subset, without a server."""

from __future__ import annotations

import json

import pytest

from gateway.s3 import acl, errors, policy, xmlbody
from gateway.s3.acl import ALL_USERS, PRIVATE, PUBLIC_READ

BUCKET = "site"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"x-amz-acl": "private"}, PRIVATE),
        ({"x-amz-acl": "bucket-owner-full-control"}, PRIVATE),
        ({"x-amz-acl": "public-read"}, PUBLIC_READ),
        ({"x-amz-grant-read": f'uri="{ALL_USERS}"'}, PUBLIC_READ),
    ],
)
def test_acl_from_headers(headers: dict[str, str], expected: str | None) -> None:
    assert acl.acl_from_headers(headers) == expected


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"x-amz-acl": "authenticated-read"}, errors.NotImplemented),
        ({"x-amz-acl": "log-delivery-write"}, errors.NotImplemented),
        ({"x-amz-acl": "PUBLIC-READ"}, errors.InvalidArgument),
        ({"x-amz-acl": ""}, errors.InvalidArgument),
        ({"x-amz-grant-write": f'uri="{ALL_USERS}"'}, errors.NotImplemented),
        ({"x-amz-grant-read": f'uri="{ALL_USERS}", id="someone"'}, errors.NotImplemented),
        ({"x-amz-acl": "private", "x-amz-grant-read": 'id="x"'}, errors.InvalidRequest),
    ],
)
def test_acl_headers_refused(headers: dict[str, str], error: type[errors.S3Error]) -> None:
    with pytest.raises(error):
        acl.acl_from_headers(headers)


def _policy_body(*grants: str) -> bytes:
    return (
        '<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<Owner><ID>me</ID></Owner><AccessControlList>" + "".join(grants) + "</AccessControlList>"
        "</AccessControlPolicy>"
    ).encode()


OWNER_FULL = (
    '<Grant><Grantee xsi:type="CanonicalUser"><ID>me</ID></Grantee>'
    "<Permission>FULL_CONTROL</Permission></Grant>"
)
EVERYONE_READ = (
    f'<Grant><Grantee xsi:type="Group"><URI>{ALL_USERS}</URI></Grantee>'
    "<Permission>READ</Permission></Grant>"
)


def test_access_control_policy_bodies() -> None:
    owners = {"me"}
    grants = xmlbody.parse_access_control_policy(_policy_body(OWNER_FULL))
    assert acl.acl_from_grants(grants, owners) == PRIVATE
    grants = xmlbody.parse_access_control_policy(_policy_body(OWNER_FULL, EVERYONE_READ))
    assert acl.acl_from_grants(grants, owners) == PUBLIC_READ
    other = OWNER_FULL.replace("<ID>me</ID>", "<ID>them</ID>")
    with pytest.raises(errors.NotImplemented):
        acl.acl_from_grants(xmlbody.parse_access_control_policy(_policy_body(other)), owners)
    with pytest.raises(errors.NotImplemented):
        write = EVERYONE_READ.replace("READ<", "WRITE<")
        acl.acl_from_grants(xmlbody.parse_access_control_policy(_policy_body(write)), owners)
    with pytest.raises(errors.MalformedACLError):
        bad = EVERYONE_READ.replace("READ<", "EVERYTHING<")
        acl.acl_from_grants(xmlbody.parse_access_control_policy(_policy_body(bad)), owners)


@pytest.mark.parametrize(
    "body",
    [
        b"<AccessControlPolicy/>",
        b"<Other/>",
        b"not xml",
        _policy_body(
            '<Grant><Grantee xsi:type="Group"></Grantee><Permission>READ</Permission></Grant>'
        ),
        _policy_body('<Grant><Grantee xsi:type="Robot"><ID>x</ID></Grantee></Grant>'),
    ],
)
def test_malformed_access_control_policy(body: bytes) -> None:
    with pytest.raises(errors.MalformedACLError):
        xmlbody.parse_access_control_policy(body)


def _statement(**fields: object) -> dict[str, object]:
    return {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/*",
        **fields,
    }


def _parse(*statements: dict[str, object]) -> policy.BucketPolicy:
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    return policy.parse_policy(json.dumps(document), BUCKET)


def test_policy_reads_keys_prefixes_and_listing() -> None:
    parsed = _parse(
        _statement(Resource=[f"arn:aws:s3:::{BUCKET}/img/*", f"arn:aws:s3:::{BUCKET}/index.html"]),
        _statement(Action=["s3:ListBucket"], Resource=f"arn:aws:s3:::{BUCKET}"),
    )
    assert parsed.list_bucket and not parsed.get_location
    assert parsed.allows_read("img/a.png") and parsed.allows_read("index.html")
    assert not parsed.allows_read("index.html.bak") and not parsed.allows_read("im")
    everything = _parse(_statement(Principal={"AWS": "*"}, Action="S3:GetObject"))
    assert everything.allows_read("any/key") and not everything.list_bucket
    single = policy.parse_policy(json.dumps({"Statement": _statement()}), BUCKET)
    assert single.allows_read("x")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"Effect": "Deny"}, errors.NotImplemented),
        ({"Principal": {"AWS": ["*", "arn:aws:iam::1:root"]}}, errors.NotImplemented),
        ({"Principal": {"Service": "cloudfront.amazonaws.com"}}, errors.NotImplemented),
        ({"Action": "s3:GetObjectVersion"}, errors.NotImplemented),
        ({"Resource": f"arn:aws:s3:::{BUCKET}/*.jpg"}, errors.NotImplemented),
        ({"NotResource": "x"}, errors.NotImplemented),
        ({"Resource": f"arn:aws:s3:::{BUCKET}"}, errors.MalformedPolicy),
        ({"Action": "s3:ListBucket"}, errors.MalformedPolicy),
        ({"Resource": "arn:aws:s3:::other/*"}, errors.MalformedPolicy),
        ({"Resource": "*"}, errors.MalformedPolicy),
        ({"Action": []}, errors.MalformedPolicy),
        ({"Colour": "blue"}, errors.MalformedPolicy),
    ],
)
def test_policies_refused(fields: dict[str, object], error: type[errors.S3Error]) -> None:
    with pytest.raises(error):
        _parse(_statement(**fields))


@pytest.mark.parametrize(
    "document",
    ["", "nope", "[]", '{"Statement": []}', '{"Version": "2020-01-01", "Statement": {}}'],
)
def test_policy_documents_refused(document: str) -> None:
    with pytest.raises(errors.MalformedPolicy):
        policy.parse_policy(document, BUCKET)
