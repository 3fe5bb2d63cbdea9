"""ListObjects (v1) and ListObjectsV2 through boto3, and raw where a client hides the wire."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_plus

import pytest
import requests
from botocore.exceptions import ClientError
from lxml import etree

from tests.conftest import LOCAL_ONLY, ROOT_ACCESS_KEY, ROOT_SECRET_KEY

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def fill(s3, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b""), keys))


@pytest.fixture(scope="module")
def big_bucket(s3) -> tuple[str, list[str]]:
    """2,500 keys across 3 top-level prefixes, plus top-level files: more than 2 pages."""
    import uuid

    name = f"list-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    keys = [f"{top}/{i:04d}" for top in ("a", "b", "c") for i in range(800)]
    keys += [f"top-{i:03d}" for i in range(100)]
    fill(s3, name, keys)
    return name, sorted(keys)


def test_v2_paginates_over_1000_keys(s3, big_bucket) -> None:
    name, keys = big_bucket
    paginator = s3.get_paginator("list_objects_v2")
    pages = list(paginator.paginate(Bucket=name))
    assert len(pages) == 3
    assert [p["KeyCount"] for p in pages] == [1000, 1000, 500]
    assert all(p["IsTruncated"] for p in pages[:-1]) and not pages[-1]["IsTruncated"]
    assert "NextContinuationToken" not in pages[-1]
    listed = [o["Key"] for p in pages for o in p["Contents"]]
    assert listed == keys


def test_v1_paginates_over_1000_keys(s3, big_bucket) -> None:
    name, keys = big_bucket
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=name))
    listed = [o["Key"] for p in pages for o in p["Contents"]]
    assert listed == keys
    assert len(pages) == 3


def test_delimiter_rolls_up_prefixes(s3, big_bucket) -> None:
    name, _ = big_bucket
    result = s3.list_objects_v2(Bucket=name, Delimiter="/")
    assert [p["Prefix"] for p in result["CommonPrefixes"]] == ["a/", "b/", "c/"]
    assert len(result["Contents"]) == 100
    assert result["KeyCount"] == 103
    assert not result["IsTruncated"]


@pytest.mark.parametrize("operation", ["list_objects", "list_objects_v2"])
def test_delimiter_pages_never_repeat_a_prefix(s3, big_bucket, operation: str) -> None:
    name, keys = big_bucket
    pages = list(
        s3.get_paginator(operation).paginate(
            Bucket=name, Delimiter="/", PaginationConfig={"PageSize": 2}
        )
    )
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    contents = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert prefixes == ["a/", "b/", "c/"]
    assert contents == [k for k in keys if "/" not in k]
    for page in pages[:-1]:
        assert page["IsTruncated"]
        assert page.get("NextContinuationToken") or page.get("NextMarker")


def test_prefix_and_delimiter(s3, big_bucket) -> None:
    name, _ = big_bucket
    result = s3.list_objects_v2(Bucket=name, Prefix="b/", MaxKeys=5)
    assert [o["Key"] for o in result["Contents"]] == [f"b/{i:04d}" for i in range(5)]
    assert result["IsTruncated"]
    result = s3.list_objects_v2(Bucket=name, Prefix="b/07", Delimiter="/")
    assert [o["Key"] for o in result["Contents"]] == [f"b/{i:04d}" for i in range(700, 800)]


def test_start_after_and_marker(s3, big_bucket) -> None:
    name, _ = big_bucket
    result = s3.list_objects_v2(Bucket=name, StartAfter="c/0797")
    assert [o["Key"] for o in result["Contents"]][:3] == ["c/0798", "c/0799", "top-000"]
    result = s3.list_objects(Bucket=name, Marker="top-097")
    assert [o["Key"] for o in result["Contents"]] == ["top-098", "top-099"]


def test_max_keys_zero_and_over_limit(s3, big_bucket) -> None:
    name, _ = big_bucket
    assert s3.list_objects_v2(Bucket=name, MaxKeys=0)["KeyCount"] == 0
    assert s3.list_objects_v2(Bucket=name, MaxKeys=5000)["KeyCount"] == 1000


def test_empty_bucket_listing(s3, bucket: str) -> None:
    result = s3.list_objects_v2(Bucket=bucket)
    assert result["KeyCount"] == 0
    assert "Contents" not in result
    assert not result["IsTruncated"]


def signed_get(gateway, path: str, query: str) -> requests.Response:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=f"{gateway.endpoint}{path}?{query}")
    S3SigV4Auth(Credentials(ROOT_ACCESS_KEY, ROOT_SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return requests.get(request.url, headers=dict(request.headers), timeout=10)


def test_encoding_type_url_applies_to_everything(gateway, s3, bucket: str) -> None:
    keys = ["dir one/a+b", "dir one/c d", "dir%two/e", "plain"]
    fill(s3, bucket, keys)
    response = signed_get(
        gateway, f"/{bucket}", "list-type=2&delimiter=%2F&encoding-type=url&start-after=dir%20"
    )
    assert response.status_code == 200, response.text
    root = etree.fromstring(response.content)
    assert root.findtext(f"{NS}EncodingType") == "url"
    prefixes = [p.findtext(f"{NS}Prefix") for p in root.iter(f"{NS}CommonPrefixes")]
    assert prefixes == ["dir%20one/", "dir%25two/"]
    assert root.findtext(f"{NS}StartAfter") == "dir%20"
    assert root.findtext(f"{NS}Delimiter") == "/"
    contents = [c.findtext(f"{NS}Key") for c in root.iter(f"{NS}Contents")]
    assert contents == ["plain"]
    # boto3 requests url encoding itself and decodes it transparently.
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys)


def test_control_characters_still_produce_valid_xml(gateway, s3, bucket: str) -> None:
    key = "ctl\x01\x02\x1fkey"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == [key]
    # Without encoding-type the document must still parse: the gateway switches to url encoding
    # and says so, as nothing else can carry these characters in XML 1.0.
    response = signed_get(gateway, f"/{bucket}", "list-type=2")
    root = etree.fromstring(response.content)
    assert root.findtext(f"{NS}EncodingType") == "url"
    assert unquote_plus(root.find(f"{NS}Contents").findtext(f"{NS}Key")) == key


def test_utf8_byte_order(s3, bucket: str) -> None:
    keys = ["a", "Z", "é", "~", "日本", "😀", "\ue000", "a/b", "a-b"]
    fill(s3, bucket, keys)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))


def test_invalid_parameters(s3, gateway, bucket: str) -> None:
    response = signed_get(gateway, f"/{bucket}", "list-type=2&max-keys=-1")
    assert response.status_code == 400
    assert b"<Code>InvalidArgument</Code>" in response.content
    response = signed_get(gateway, f"/{bucket}", "list-type=2&encoding-type=base64")
    assert b"<Code>InvalidArgument</Code>" in response.content
    with pytest.raises(ClientError) as excinfo:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="%%%not-a-token")
    assert excinfo.value.response["Error"]["Code"] == "InvalidArgument"


@LOCAL_ONLY
def test_owner_with_fetch_owner_and_always_in_v1(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    owner = s3.list_buckets()["Owner"]
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    listed = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]
    assert listed["Owner"]["ID"] == owner["ID"]
    assert s3.list_objects(Bucket=bucket)["Contents"][0]["Owner"]["ID"] == owner["ID"]


def _texts(root: etree._Element, *path: str) -> list[str | None]:
    return [element.text for element in root.iterfind("/".join(NS + step for step in path))]


@LOCAL_ONLY
def test_encoding_type_url_encodes_the_listed_elements_only(gateway, s3, bucket: str) -> None:
    """The elements the S3 reference lists as encoded, and no others: clients decode by
    that list (botocore's, for one)."""
    fill(s3, bucket, ["a b+1", "a b+2", "a b/c+d", "a b/e"])
    query = "delimiter=%2B&prefix=a%20b&encoding-type=url&max-keys=1"
    root = etree.fromstring(signed_get(gateway, f"/{bucket}", f"{query}&marker=a%20").content)
    assert _texts(root, "Prefix") == ["a%20b"]
    assert _texts(root, "Delimiter") == ["%2B"]
    assert _texts(root, "Marker") == ["a%20"]
    assert _texts(root, "NextMarker") == ["a%20b%2B"]
    assert _texts(root, "CommonPrefixes", "Prefix") == ["a%20b%2B"]
    query = "list-type=2&prefix=a%20b&encoding-type=url&max-keys=1"
    response = signed_get(gateway, f"/{bucket}", f"{query}&start-after=a%20b%2B2")
    root = etree.fromstring(response.content)
    assert _texts(root, "StartAfter") == ["a%20b%2B2"]
    assert _texts(root, "Contents", "Key") == ["a%20b/c%2Bd"]
    token = root.findtext(f"{NS}NextContinuationToken")
    assert token is not None
    # The token is opaque: returned as it was given, never encoded.
    quoted = requests.utils.quote(token, safe="")
    response = signed_get(gateway, f"/{bucket}", f"{query}&continuation-token={quoted}")
    root = etree.fromstring(response.content)
    assert _texts(root, "ContinuationToken") == [token]
    assert _texts(root, "Contents", "Key") == ["a%20b/e"]
    # ListMultipartUploads: KeyMarker, NextKeyMarker, Prefix, Delimiter and Key.
    for key in ("a b+u", "a b/u+1", "a b/u+2"):
        s3.create_multipart_upload(Bucket=bucket, Key=key)
    uploads = "uploads&delimiter=%2F&prefix=a%20b&encoding-type=url&max-uploads=1"
    root = etree.fromstring(
        signed_get(gateway, f"/{bucket}", f"{uploads}&key-marker=a%20b%2Bu").content
    )
    assert _texts(root, "KeyMarker") == ["a%20b%2Bu"]
    assert _texts(root, "Prefix") == ["a%20b"]
    assert _texts(root, "Delimiter") == ["/"]
    assert _texts(root, "CommonPrefixes", "Prefix") == ["a%20b/"]
    assert _texts(root, "NextKeyMarker") == ["a%20b/"]
    root = etree.fromstring(signed_get(gateway, f"/{bucket}", "uploads&encoding-type=url").content)
    assert _texts(root, "Upload", "Key") == ["a%20b%2Bu", "a%20b/u%2B1", "a%20b/u%2B2"]
    # ListParts has no encoding-type: its Key is the key itself.
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"][0]
    path = f"/{bucket}/a%20b%2Bu"
    root = etree.fromstring(
        signed_get(gateway, path, f"uploadId={listed['UploadId']}&encoding-type=url").content
    )
    assert _texts(root, "Key") == ["a b+u"]
