"""The upstream key layout: 1:1 under the bucket's prefix, never inside the variants prefix."""

from __future__ import annotations

import pytest

from gateway.config import UpstreamProfile
from gateway.errors import KeyNotStorableError
from gateway.storage.upstream import ObjectAttributes, UpstreamStore


def store(**settings: object) -> UpstreamStore:
    profile = UpstreamProfile.model_validate({"type": "upstream", "bucket": "upstream", **settings})
    return UpstreamStore("media", profile)


def test_keys_map_one_to_one_under_the_bucket_prefix() -> None:
    assert store().object_key("photos", "a/b c.jpg") == "photos/a/b c.jpg"
    assert store(prefix="site/{bucket}/").object_key("photos", "x") == "site/photos/x"
    assert store(prefix="").object_key("photos", "x") == "x"


def test_a_key_too_long_once_prefixed_is_refused() -> None:
    layout = store()
    assert layout.object_key("photos", "k" * 1017) == "photos/" + "k" * 1017
    with pytest.raises(KeyNotStorableError) as excinfo:
        layout.object_key("photos", "k" * 1018)
    assert excinfo.value.max_size == 1017


def test_keys_inside_the_variants_prefix_are_refused() -> None:
    layout = store(prefix="")
    with pytest.raises(KeyNotStorableError) as excinfo:
        layout.object_key("photos", "_gateway/variants/abc")
    assert excinfo.value.max_size is None
    assert layout.is_reserved(layout.new_key())
    # With the default prefix no client key can get there: bucket names never start with "_".
    assert not store().is_reserved(store().object_key("photos", "_gateway/variants/abc"))


def test_what_goes_upstream_is_what_http_headers_carry() -> None:
    attributes = ObjectAttributes(
        content_type="image/jpeg",
        user_metadata={"plain": "yes", "accented": "déjà vu"},
        headers={"cache-control": "max-age=60", "expires": "Thu, 01 Jan 2037 00:00:00 GMT"},
    )
    assert attributes.params() == {
        "ContentType": "image/jpeg",
        # Beyond ASCII, as S3 itself returns such a value: RFC 2047 encoded.
        "Metadata": {"plain": "yes", "accented": "=?UTF-8?B?ZMOpasOgIHZ1?="},
        "CacheControl": "max-age=60",
    }
