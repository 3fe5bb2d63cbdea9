"""S3 XML response documents."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from lxml import etree

from gateway.s3.acl import ALL_USERS
from gateway.s3.cors import CorsRule
from gateway.s3.errors import InvalidArgument
from gateway.s3.lifecycle import LifecycleFilter, LifecycleRule
from gateway.s3.website import WebsiteConfiguration
from gateway.s3.xmlbody import ObjectIdentifier

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"

# Characters XML 1.0 cannot carry, even escaped (most C0 controls, lone surrogates, U+FFFE/F).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def is_xml_safe(text: str) -> bool:
    return _NOT_XML.search(text) is None


def iso8601(moment: datetime) -> str:
    """S3's timestamp format in XML: millisecond precision, Z suffix."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def encoding_url(encoding_type: str | None) -> bool:
    """Whether a listing's ``encoding-type`` asks for url encoding; ``url`` is the only one."""
    if encoding_type is None:
        return False
    if encoding_type.lower() != "url":
        raise InvalidArgument(
            "Invalid Encoding Method specified in Request",
            ArgumentName="encoding-type",
            ArgumentValue=encoding_type,
        )
    return True


def url_encode(value: str) -> str:
    """encoding-type=url: clients decode with unquote_plus, so '+' must become %2B."""
    return quote(value, safe="/")


# lxml refuses what XML 1.0 cannot carry, yet S3 writes such characters of a key as character
# references (``&#x1;``) in documents that have no url encoding, so the key round-trips exactly.
# They go in as this marker (random per process: no key can contain it) and become "&#x" once
# the document is serialised.
_CHAR_REF = "charref" + secrets.token_hex(16)
_CHAR_REF_BYTES = _CHAR_REF.encode("ascii")


def _document(root: etree._Element) -> bytes:
    document = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    if _CHAR_REF_BYTES in document:
        document = document.replace(_CHAR_REF_BYTES, b"&#x")
    return document


def _root(tag: str) -> etree._Element:
    return etree.Element(tag, nsmap={None: S3_NS})


def _add(parent: etree._Element, tag: str, text: object | None = None) -> etree._Element:
    child = etree.SubElement(parent, tag)
    if text is not None:
        child.text = text if isinstance(text, str) else str(text)
    return child


def _xml_text(value: str) -> str:
    """Replace what XML cannot carry; for error texts, which clients must always parse."""
    return _NOT_XML.sub("\ufffd", value)


def _exact_text(value: str) -> str:
    """A key as S3 writes it where no url encoding is offered: what XML 1.0 cannot carry as
    character references (strict XML parsers refuse those, as they do S3's)."""
    if is_xml_safe(value):
        return value
    return _NOT_XML.sub(lambda found: f"{_CHAR_REF}{ord(found.group()):X};", value)


def error_document(
    code: str, message: str, resource: str, request_id: str, extra: Mapping[str, str]
) -> bytes:
    root = etree.Element("Error")
    _add(root, "Code", code)
    _add(root, "Message", _xml_text(message))
    for name, value in extra.items():
        _add(root, name, _xml_text(value))
    _add(root, "Resource", _xml_text(resource))
    _add(root, "RequestId", request_id)
    _add(root, "HostId", request_id)
    return _document(root)


def list_all_my_buckets(
    owner_id: str,
    buckets: Iterable[tuple[str, datetime]],
    region: str,
    prefix: str | None = None,
    continuation_token: str | None = None,
) -> bytes:
    """ListBuckets; ``continuation_token`` resumes after the last bucket listed (S3 names the
    next page's token ContinuationToken here, not NextContinuationToken)."""
    root = _root("ListAllMyBucketsResult")
    owner = _add(root, "Owner")
    _add(owner, "ID", owner_id)
    _add(owner, "DisplayName", owner_id)
    container = _add(root, "Buckets")
    for name, created in buckets:
        bucket = _add(container, "Bucket")
        _add(bucket, "Name", name)
        _add(bucket, "CreationDate", iso8601(created))
        _add(bucket, "BucketRegion", region)
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if prefix is not None:
        _add(root, "Prefix", prefix)
    return _document(root)


def location_constraint(region: str) -> bytes:
    root = _root("LocationConstraint")
    # S3 answers an empty LocationConstraint for us-east-1.
    if region != "us-east-1":
        root.text = region
    return _document(root)


def versioning_configuration(status: str | None) -> bytes:
    """GetBucketVersioning: Enabled or Suspended; a bucket whose versioning was never enabled
    has no Status at all (S3's answer, which SDKs and rclone read as "unversioned")."""
    root = _root("VersioningConfiguration")
    if status is not None:
        _add(root, "Status", status)
    return _document(root)


@dataclass(frozen=True)
class VersionEntry:
    """A Version or DeleteMarker of ListObjectVersions."""

    key: str
    version_id: str
    is_latest: bool
    last_modified: datetime
    delete_marker: bool
    etag: str = ""
    size: int = 0


@dataclass(frozen=True)
class VersionListing:
    bucket: str
    prefix: str
    delimiter: str | None
    key_marker: str
    version_id_marker: str
    next_key_marker: str | None
    next_version_id_marker: str | None
    max_keys: int
    is_truncated: bool
    versions: Sequence[VersionEntry]
    common_prefixes: Sequence[str]
    encoding_url: bool
    owner_id: str


def list_versions_result(listing: VersionListing) -> bytes:
    """ListObjectVersions: versions and delete markers in one sequence, by key and then newest
    first, as S3 interleaves them."""
    strings = [listing.prefix, listing.delimiter or "", listing.key_marker]
    strings += [listing.next_key_marker or "", *listing.common_prefixes]
    strings += [entry.key for entry in listing.versions]
    # As in object listings, a key XML cannot carry forces url encoding.
    encode = listing.encoding_url or not all(is_xml_safe(text) for text in strings)

    def text(value: str) -> str:
        return url_encode(value) if encode else value

    root = _root("ListVersionsResult")
    _add(root, "Name", listing.bucket)
    _add(root, "Prefix", text(listing.prefix))
    _add(root, "KeyMarker", text(listing.key_marker))
    _add(root, "VersionIdMarker", listing.version_id_marker)
    if listing.next_key_marker is not None:
        _add(root, "NextKeyMarker", text(listing.next_key_marker))
    if listing.next_version_id_marker is not None:
        _add(root, "NextVersionIdMarker", listing.next_version_id_marker)
    _add(root, "MaxKeys", listing.max_keys)
    if listing.delimiter is not None:
        _add(root, "Delimiter", text(listing.delimiter))
    _add(root, "IsTruncated", "true" if listing.is_truncated else "false")
    for entry in listing.versions:
        item = _add(root, "DeleteMarker" if entry.delete_marker else "Version")
        _add(item, "Key", text(entry.key))
        _add(item, "VersionId", entry.version_id)
        _add(item, "IsLatest", "true" if entry.is_latest else "false")
        _add(item, "LastModified", iso8601(entry.last_modified))
        if not entry.delete_marker:
            _add(item, "ETag", entry.etag)
            _add(item, "Size", entry.size)
            _add(item, "StorageClass", "STANDARD")
        _owner(item, "Owner", listing.owner_id)
    for common in listing.common_prefixes:
        _add(_add(root, "CommonPrefixes"), "Prefix", text(common))
    if encode:
        _add(root, "EncodingType", "url")
    return _document(root)


_XSI = "http://www.w3.org/2001/XMLSchema-instance"


def access_control_policy(owner_id: str, public_read: bool) -> bytes:
    """GetBucketAcl and GetObjectAcl: the owner's FULL_CONTROL, and READ for AllUsers when
    the bucket or object is public."""
    root = _root("AccessControlPolicy")
    _owner(root, "Owner", owner_id)
    grants = _add(root, "AccessControlList")
    grant = _add(grants, "Grant")
    grantee = etree.SubElement(grant, "Grantee", nsmap={"xsi": _XSI})
    grantee.set(f"{{{_XSI}}}type", "CanonicalUser")
    _add(grantee, "ID", owner_id)
    _add(grantee, "DisplayName", owner_id)
    _add(grant, "Permission", "FULL_CONTROL")
    if public_read:
        grant = _add(grants, "Grant")
        grantee = etree.SubElement(grant, "Grantee", nsmap={"xsi": _XSI})
        grantee.set(f"{{{_XSI}}}type", "Group")
        _add(grantee, "URI", ALL_USERS)
        _add(grant, "Permission", "READ")
    return _document(root)


@dataclass(frozen=True)
class ListingEntry:
    key: str
    last_modified: datetime
    etag: str
    size: int


@dataclass(frozen=True)
class Listing:
    bucket: str
    prefix: str
    delimiter: str | None
    max_keys: int
    contents: Sequence[ListingEntry]
    common_prefixes: Sequence[str]
    is_truncated: bool
    encoding_url: bool
    owner_id: str


def _needs_forced_encoding(listing: Listing, extra_strings: Iterable[str]) -> bool:
    strings = [listing.prefix, listing.delimiter or "", *extra_strings]
    strings += [entry.key for entry in listing.contents]
    strings += listing.common_prefixes
    return not all(is_xml_safe(text) for text in strings)


def _listing_common(root: etree._Element, listing: Listing, encode: bool, with_owner: bool) -> None:
    def text(value: str) -> str:
        return url_encode(value) if encode else value

    for entry in listing.contents:
        item = _add(root, "Contents")
        _add(item, "Key", text(entry.key))
        _add(item, "LastModified", iso8601(entry.last_modified))
        _add(item, "ETag", entry.etag)
        _add(item, "Size", entry.size)
        if with_owner:
            _owner(item, "Owner", listing.owner_id)
        _add(item, "StorageClass", "STANDARD")
    for common in listing.common_prefixes:
        _add(_add(root, "CommonPrefixes"), "Prefix", text(common))
    if encode:
        _add(root, "EncodingType", "url")


def list_objects_v2(
    listing: Listing,
    continuation_token: str | None,
    next_continuation_token: str | None,
    start_after: str | None,
    fetch_owner: bool,
) -> bytes:
    # A key XML cannot carry forces url encoding, announced by EncodingType so clients decode.
    encode = listing.encoding_url or _needs_forced_encoding(listing, [start_after or ""])

    def text(value: str) -> str:
        return url_encode(value) if encode else value

    root = _root("ListBucketResult")
    _add(root, "Name", listing.bucket)
    _add(root, "Prefix", text(listing.prefix))
    if start_after is not None:
        _add(root, "StartAfter", text(start_after))
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if next_continuation_token is not None:
        _add(root, "NextContinuationToken", next_continuation_token)
    _add(root, "KeyCount", len(listing.contents) + len(listing.common_prefixes))
    _add(root, "MaxKeys", listing.max_keys)
    if listing.delimiter is not None:
        _add(root, "Delimiter", text(listing.delimiter))
    _add(root, "IsTruncated", "true" if listing.is_truncated else "false")
    # V2 names each object's owner only when asked (fetch-owner=true).
    _listing_common(root, listing, encode, with_owner=fetch_owner)
    return _document(root)


def list_objects_v1(listing: Listing, marker: str, next_marker: str | None) -> bytes:
    encode = listing.encoding_url or _needs_forced_encoding(listing, [marker, next_marker or ""])

    def text(value: str) -> str:
        return url_encode(value) if encode else value

    root = _root("ListBucketResult")
    _add(root, "Name", listing.bucket)
    _add(root, "Prefix", text(listing.prefix))
    _add(root, "Marker", text(marker))
    if next_marker is not None:
        _add(root, "NextMarker", text(next_marker))
    _add(root, "MaxKeys", listing.max_keys)
    if listing.delimiter is not None:
        _add(root, "Delimiter", text(listing.delimiter))
    _add(root, "IsTruncated", "true" if listing.is_truncated else "false")
    _listing_common(root, listing, encode, with_owner=True)
    return _document(root)


@dataclass(frozen=True)
class DeleteError:
    key: str
    code: str
    message: str
    # The version the request named, echoed as S3 does.
    version_id: str | None = None


@dataclass(frozen=True)
class Deleted:
    """A key DeleteObjects deleted: the target as named, and the delete marker involved (one
    written, or the one removed by naming its version)."""

    target: ObjectIdentifier
    delete_marker: bool = False
    # The version id of a delete marker the delete wrote.
    delete_marker_version_id: str | None = None


def delete_result(deleted: Sequence[Deleted], errors: Sequence[DeleteError], quiet: bool) -> bytes:
    root = _root("DeleteResult")
    if not quiet:
        for entry in deleted:
            item = _add(root, "Deleted")
            _add(item, "Key", _exact_text(entry.target.key))
            if entry.target.version_id is not None:
                _add(item, "VersionId", _xml_text(entry.target.version_id))
            if entry.delete_marker:
                _add(item, "DeleteMarker", "true")
            if entry.delete_marker_version_id is not None:
                _add(item, "DeleteMarkerVersionId", entry.delete_marker_version_id)
    for error in errors:
        item = _add(root, "Error")
        _add(item, "Key", _exact_text(error.key))
        if error.version_id is not None:
            _add(item, "VersionId", _xml_text(error.version_id))
        _add(item, "Code", error.code)
        _add(item, "Message", error.message)
    return _document(root)


def copy_object_result(etag: str, last_modified: datetime, checksums: Mapping[str, str]) -> bytes:
    root = _root("CopyObjectResult")
    _add(root, "LastModified", iso8601(last_modified))
    _add(root, "ETag", etag)
    for algorithm, value in checksums.items():
        _add(root, f"Checksum{algorithm}", value)
    return _document(root)


# Multipart uploads.


def _owner(parent: etree._Element, tag: str, owner_id: str) -> None:
    owner = _add(parent, tag)
    _add(owner, "ID", owner_id)
    _add(owner, "DisplayName", owner_id)


def _checksums(parent: etree._Element, checksums: Mapping[str, str]) -> None:
    for algorithm, value in checksums.items():
        _add(parent, f"Checksum{algorithm}", value)


def initiate_multipart_upload_result(bucket: str, key: str, upload_id: str) -> bytes:
    root = _root("InitiateMultipartUploadResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", _exact_text(key))
    _add(root, "UploadId", upload_id)
    return _document(root)


def complete_multipart_upload_result(
    location: str,
    bucket: str,
    key: str,
    etag: str,
    checksums: Mapping[str, str],
    checksum_type: str | None,
) -> bytes:
    root = _root("CompleteMultipartUploadResult")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", _exact_text(key))
    _add(root, "ETag", etag)
    _checksums(root, checksums)
    if checksum_type is not None and checksums:
        _add(root, "ChecksumType", checksum_type)
    return _document(root)


def copy_part_result(etag: str, last_modified: datetime, checksums: Mapping[str, str]) -> bytes:
    root = _root("CopyPartResult")
    _add(root, "LastModified", iso8601(last_modified))
    _add(root, "ETag", etag)
    _checksums(root, checksums)
    return _document(root)


@dataclass(frozen=True)
class PartEntry:
    part_number: int
    last_modified: datetime
    etag: str
    size: int
    checksums: Mapping[str, str]


@dataclass(frozen=True)
class PartListing:
    bucket: str
    key: str
    upload_id: str
    owner_id: str
    part_number_marker: int
    next_part_number_marker: int | None
    max_parts: int
    is_truncated: bool
    parts: Sequence[PartEntry]
    checksum_algorithm: str | None
    checksum_type: str | None


def list_parts_result(listing: PartListing) -> bytes:
    root = _root("ListPartsResult")
    _add(root, "Bucket", listing.bucket)
    _add(root, "Key", _exact_text(listing.key))
    _add(root, "UploadId", listing.upload_id)
    _owner(root, "Initiator", listing.owner_id)
    _owner(root, "Owner", listing.owner_id)
    _add(root, "StorageClass", "STANDARD")
    _add(root, "PartNumberMarker", listing.part_number_marker)
    if listing.next_part_number_marker is not None:
        _add(root, "NextPartNumberMarker", listing.next_part_number_marker)
    _add(root, "MaxParts", listing.max_parts)
    _add(root, "IsTruncated", "true" if listing.is_truncated else "false")
    if listing.checksum_algorithm is not None:
        _add(root, "ChecksumAlgorithm", listing.checksum_algorithm)
    if listing.checksum_type is not None:
        _add(root, "ChecksumType", listing.checksum_type)
    for part in listing.parts:
        item = _add(root, "Part")
        _add(item, "PartNumber", part.part_number)
        _add(item, "LastModified", iso8601(part.last_modified))
        _add(item, "ETag", part.etag)
        _add(item, "Size", part.size)
        _checksums(item, part.checksums)
    return _document(root)


@dataclass(frozen=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: datetime
    owner_id: str
    checksum_algorithm: str | None
    checksum_type: str | None


@dataclass(frozen=True)
class UploadListing:
    bucket: str
    prefix: str
    delimiter: str | None
    key_marker: str
    upload_id_marker: str
    next_key_marker: str | None
    next_upload_id_marker: str | None
    max_uploads: int
    is_truncated: bool
    uploads: Sequence[UploadEntry]
    common_prefixes: Sequence[str]
    encoding_url: bool


def list_multipart_uploads_result(listing: UploadListing) -> bytes:
    strings = [listing.prefix, listing.delimiter or "", listing.key_marker]
    strings += [listing.next_key_marker or "", *listing.common_prefixes]
    strings += [upload.key for upload in listing.uploads]
    # As in object listings, a key XML cannot carry forces url encoding.
    encode = listing.encoding_url or not all(is_xml_safe(text) for text in strings)

    def text(value: str) -> str:
        return url_encode(value) if encode else value

    root = _root("ListMultipartUploadsResult")
    _add(root, "Bucket", listing.bucket)
    _add(root, "KeyMarker", text(listing.key_marker))
    _add(root, "UploadIdMarker", listing.upload_id_marker)
    if listing.next_key_marker is not None:
        _add(root, "NextKeyMarker", text(listing.next_key_marker))
    if listing.next_upload_id_marker is not None:
        _add(root, "NextUploadIdMarker", listing.next_upload_id_marker)
    _add(root, "Prefix", text(listing.prefix))
    if listing.delimiter is not None:
        _add(root, "Delimiter", text(listing.delimiter))
    _add(root, "MaxUploads", listing.max_uploads)
    _add(root, "IsTruncated", "true" if listing.is_truncated else "false")
    for upload in listing.uploads:
        item = _add(root, "Upload")
        _add(item, "Key", text(upload.key))
        _add(item, "UploadId", upload.upload_id)
        _owner(item, "Initiator", upload.owner_id)
        _owner(item, "Owner", upload.owner_id)
        _add(item, "StorageClass", "STANDARD")
        _add(item, "Initiated", iso8601(upload.initiated))
        if upload.checksum_algorithm is not None:
            _add(item, "ChecksumAlgorithm", upload.checksum_algorithm)
        if upload.checksum_type is not None:
            _add(item, "ChecksumType", upload.checksum_type)
    for common in listing.common_prefixes:
        _add(_add(root, "CommonPrefixes"), "Prefix", text(common))
    if encode:
        _add(root, "EncodingType", "url")
    return _document(root)


def cors_configuration(rules: Sequence[CorsRule]) -> bytes:
    """GetBucketCors: the rules in the order they are matched."""
    root = _root("CORSConfiguration")
    for rule in rules:
        element = _add(root, "CORSRule")
        if rule.id is not None:
            _add(element, "ID", rule.id)
        for tag, values in (
            ("AllowedHeader", rule.allowed_headers),
            ("AllowedMethod", rule.allowed_methods),
            ("AllowedOrigin", rule.allowed_origins),
            ("ExposeHeader", rule.expose_headers),
        ):
            for value in values:
                _add(element, tag, _exact_text(value))
        if rule.max_age_seconds is not None:
            _add(element, "MaxAgeSeconds", rule.max_age_seconds)
    return _document(root)


def website_configuration(config: WebsiteConfiguration) -> bytes:
    """GetBucketWebsite."""
    root = _root("WebsiteConfiguration")
    _add(_add(root, "IndexDocument"), "Suffix", _exact_text(config.index_suffix))
    if config.error_key is not None:
        _add(_add(root, "ErrorDocument"), "Key", _exact_text(config.error_key))
    return _document(root)


def lifecycle_configuration(rules: Iterable[LifecycleRule]) -> bytes:
    """GetBucketLifecycleConfiguration: the rules in the form they were put."""
    root = _root("LifecycleConfiguration")
    for rule in rules:
        element = _add(root, "Rule")
        _add(element, "ID", _exact_text(rule.id))
        _lifecycle_filter(element, rule.filter)
        _add(element, "Status", "Enabled" if rule.enabled else "Disabled")
        if rule.expires_objects or rule.expired_object_delete_marker is not None:
            expiration = _add(element, "Expiration")
            if rule.expiration_date is not None:
                _add(expiration, "Date", iso8601(rule.expiration_date))
            if rule.expiration_days is not None:
                _add(expiration, "Days", rule.expiration_days)
            if rule.expired_object_delete_marker is not None:
                _add(
                    expiration,
                    "ExpiredObjectDeleteMarker",
                    "true" if rule.expired_object_delete_marker else "false",
                )
        if rule.noncurrent_days is not None:
            noncurrent = _add(element, "NoncurrentVersionExpiration")
            _add(noncurrent, "NoncurrentDays", rule.noncurrent_days)
            if rule.newer_noncurrent_versions is not None:
                _add(noncurrent, "NewerNoncurrentVersions", rule.newer_noncurrent_versions)
        if rule.abort_incomplete_upload_days is not None:
            abort = _add(element, "AbortIncompleteMultipartUpload")
            _add(abort, "DaysAfterInitiation", rule.abort_incomplete_upload_days)
    return _document(root)


def _lifecycle_filter(rule: etree._Element, found: LifecycleFilter) -> None:
    if found.form == "rule-prefix":
        _add(rule, "Prefix", _exact_text(found.prefix))
        return
    parent = _add(rule, "Filter")
    if found.form == "and":
        parent = _add(parent, "And")
    if found.prefix or (found.form == "and" and not found.tags):
        _add(parent, "Prefix", _exact_text(found.prefix))
    for key, value in found.tags:
        tag = _add(parent, "Tag")
        _add(tag, "Key", key)
        _add(tag, "Value", value)
    if found.size_greater_than is not None:
        _add(parent, "ObjectSizeGreaterThan", found.size_greater_than)
    if found.size_less_than is not None:
        _add(parent, "ObjectSizeLessThan", found.size_less_than)


def tagging(tags: Iterable[tuple[str, str]]) -> bytes:
    """GetObjectTagging."""
    root = _root("Tagging")
    tag_set = _add(root, "TagSet")
    for key, value in tags:
        tag = _add(tag_set, "Tag")
        _add(tag, "Key", key)
        _add(tag, "Value", value)
    return _document(root)


def post_response(location: str, bucket: str, key: str, etag: str) -> bytes:
    """POST Object's answer when the form asks for success_action_status 201."""
    root = etree.Element("PostResponse")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", _exact_text(key))
    _add(root, "ETag", etag)
    return _document(root)
