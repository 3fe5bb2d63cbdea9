"""Parsing of S3 XML request bodies (DeleteObjects, CreateBucket, CompleteMultipartUpload,
PutBucketCors, PutBucketAcl and PutObjectAcl, PutBucketWebsite, PutObjectTagging and the
tagging field of a POST form, PutBucketLifecycleConfiguration).

Bodies come from untrusted clients: the parser never resolves entities, loads DTDs or touches
the network, and any DOCTYPE is refused outright (billion laughs, XXE). Every problem is
reported as MalformedXML, which is what S3 answers for a body that does not fit its schema.
Callers cap the body size before parsing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from gateway.s3 import cors, errors, lifecycle, website
from gateway.s3.cors import CorsRule
from gateway.s3.errors import MalformedACLError, MalformedXML
from gateway.s3.lifecycle import FilterForm, LifecycleFilter, LifecycleRule
from gateway.s3.website import WebsiteConfiguration

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"

# DeleteObjects accepts at most 1000 keys; S3 rejects more with MalformedXML.
MAX_DELETE_OBJECTS = 1000

# xsd:int, the schema type of PartNumber.
_INT = re.compile(r"[+-]?[0-9]{1,10}")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG = re.compile(r"[+-]?[0-9]{1,18}")
_XSD_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}
_CHECKSUM_PREFIX = "Checksum"


@dataclass(frozen=True)
class ObjectIdentifier:
    key: str
    version_id: str | None = None


@dataclass(frozen=True)
class CompletedPart:
    part_number: int
    etag: str  # as sent, quoted or not: clients differ
    # Keyed by upper-case algorithm name: <ChecksumCRC32> -> "CRC32".
    checksums: dict[str, str] = field(default_factory=dict, hash=False)


def _parse(body: bytes, root_name: str) -> etree._Element:
    # A DOCTYPE has no use in an S3 body; refusing it before parsing means entity declarations
    # are never even read. The docinfo check below also catches it in non-ASCII encodings.
    if b"<!DOCTYPE" in body:
        raise MalformedXML()
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
    )
    try:
        root = etree.fromstring(body, parser)
    except (etree.XMLSyntaxError, ValueError):
        raise MalformedXML() from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise MalformedXML()
    if _name(root) != root_name:
        raise MalformedXML()
    return root


def _name(element: etree._Element) -> str | None:
    """The local name of an element in the S3 namespace or in none, else None.

    Clients differ: some namespace their bodies, some do not.
    """
    if not isinstance(element.tag, str):
        return None  # processing instructions, entity references
    qname = etree.QName(element)
    return qname.localname if qname.namespace in (None, S3_NAMESPACE) else None


def _children(parent: etree._Element, name: str) -> list[etree._Element]:
    return [child for child in parent if _name(child) == name]


def _one(parent: etree._Element, name: str) -> etree._Element | None:
    """The single child called `name`, None when absent; the schema allows no repetition."""
    found = _children(parent, name)
    if len(found) > 1:
        raise MalformedXML()
    return found[0] if found else None


def _text(element: etree._Element) -> str:
    """The element's text exactly as sent: simple-typed elements have no child elements."""
    if len(element):
        raise MalformedXML()
    return element.text or ""


def parse_delete_objects(body: bytes) -> tuple[bool, list[ObjectIdentifier]]:
    """Parse a DeleteObjects body into (quiet, objects)."""
    root = _parse(body, "Delete")
    quiet = False
    quiet_element = _one(root, "Quiet")
    if quiet_element is not None:
        value = _XSD_BOOLEAN.get(_text(quiet_element).strip())
        if value is None:
            raise MalformedXML()
        quiet = value
    elements = _children(root, "Object")
    if not elements or len(elements) > MAX_DELETE_OBJECTS:
        raise MalformedXML()
    objects = []
    for element in elements:
        key = _one(element, "Key")
        if key is None:
            raise MalformedXML()
        version = _one(element, "VersionId")
        # Keys keep their whitespace: " a " and "a" are different objects.
        objects.append(
            ObjectIdentifier(_text(key), _text(version) if version is not None else None)
        )
    return quiet, objects


def parse_tagging(body: bytes) -> list[tuple[str, str]]:
    """The (key, value) pairs of a Tagging document, in document order (limits are
    gateway.s3.tagging's)."""
    root = _parse(body, "Tagging")
    tag_set = _one(root, "TagSet")
    if tag_set is None:
        raise MalformedXML()
    tags = []
    for tag in _children(tag_set, "Tag"):
        key, value = _one(tag, "Key"), _one(tag, "Value")
        if key is None or value is None:
            raise MalformedXML()
        tags.append((_text(key), _text(value)))
    return tags


def parse_create_bucket_configuration(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucket body; None for no body or no constraint."""
    if not body.strip():
        return None
    root = _parse(body, "CreateBucketConfiguration")
    element = _one(root, "LocationConstraint")
    if element is None:
        return None
    return _text(element).strip() or None


def parse_versioning_configuration(body: bytes) -> tuple[str | None, str | None]:
    """(Status, MfaDelete) of a PutBucketVersioning body, each None when absent."""
    root = _parse(body, "VersioningConfiguration")
    found = []
    for name in ("Status", "MfaDelete"):
        element = _one(root, name)
        found.append(None if element is None else _text(element).strip())
    return found[0], found[1]


def parse_complete_multipart_upload(body: bytes) -> list[CompletedPart]:
    """The parts listed in a CompleteMultipartUpload body, in document order.

    Order, duplicates and part-number range are the caller's to check (InvalidPartOrder,
    InvalidPart), as S3 reports those with their own codes.
    """
    root = _parse(body, "CompleteMultipartUpload")
    elements = _children(root, "Part")
    if not elements:
        raise MalformedXML()
    parts = []
    for element in elements:
        number = _one(element, "PartNumber")
        etag = _one(element, "ETag")
        if number is None or etag is None:
            raise MalformedXML()
        text = _text(number).strip()
        if _INT.fullmatch(text) is None or not _INT_MIN <= int(text) <= _INT_MAX:
            raise MalformedXML()
        checksums = {}
        for child in element:
            name = _name(child)
            if name and name.startswith(_CHECKSUM_PREFIX) and name != _CHECKSUM_PREFIX:
                algorithm = name.removeprefix(_CHECKSUM_PREFIX).upper()
                if algorithm in checksums:
                    raise MalformedXML()
                checksums[algorithm] = _text(child).strip()
        parts.append(CompletedPart(int(text), _text(etag).strip(), checksums))
    return parts


def parse_cors_configuration(body: bytes) -> list[CorsRule]:
    """The rules of a PutBucketCors body, validated as S3 does (see gateway.s3.cors)."""
    root = _parse(body, "CORSConfiguration")
    rules = []
    for element in _children(root, "CORSRule"):
        max_age = _one(element, "MaxAgeSeconds")
        rule_id = _one(element, "ID")
        age_text = _text(max_age).strip() if max_age is not None else None
        if age_text is not None and not _INT.fullmatch(age_text):
            raise MalformedXML()
        rules.append(
            CorsRule(
                allowed_origins=_texts(element, "AllowedOrigin"),
                allowed_methods=_texts(element, "AllowedMethod"),
                allowed_headers=_texts(element, "AllowedHeader"),
                expose_headers=_texts(element, "ExposeHeader"),
                max_age_seconds=int(age_text) if age_text is not None else None,
                id=_text(rule_id) if rule_id is not None else None,
            )
        )
    cors.validate(rules)
    return rules


def _texts(parent: etree._Element, name: str) -> tuple[str, ...]:
    return tuple(_text(child).strip() for child in _children(parent, name))


_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


@dataclass(frozen=True)
class Grant:
    # CanonicalUser, Group or AmazonCustomerByEmail.
    grantee_type: str
    # The user's ID, the group's URI, or the email address.
    grantee: str
    permission: str


def parse_access_control_policy(body: bytes) -> list[Grant]:
    """The grants of a PutBucketAcl/PutObjectAcl body; MalformedACLError when it does not fit
    the schema, as S3 answers."""
    try:
        root = _parse(body, "AccessControlPolicy")
        grant_list = _one(root, "AccessControlList")
        if grant_list is None:
            raise MalformedXML()
        grants = []
        for element in _children(grant_list, "Grant"):
            grantee = _one(element, "Grantee")
            permission = _one(element, "Permission")
            if grantee is None or permission is None:
                raise MalformedXML()
            grantee_type = grantee.get(_XSI_TYPE, "")
            field_name = {
                "CanonicalUser": "ID",
                "Group": "URI",
                "AmazonCustomerByEmail": "EmailAddress",
            }.get(grantee_type)
            value = _one(grantee, field_name) if field_name else None
            if value is None:
                raise MalformedXML()
            grants.append(Grant(grantee_type, _text(value).strip(), _text(permission).strip()))
    except MalformedXML:
        raise MalformedACLError() from None
    return grants


def parse_website_configuration(body: bytes) -> WebsiteConfiguration:
    """A PutBucketWebsite body: IndexDocument and ErrorDocument; a whole-site redirect or
    routing rules are refused as not implemented."""
    root = _parse(body, "WebsiteConfiguration")
    for unsupported in ("RedirectAllRequestsTo", "RoutingRules"):
        if _one(root, unsupported) is not None:
            raise errors.NotImplemented(f"This gateway does not implement website {unsupported}.")
    index = _one(root, "IndexDocument")
    suffix = _one(index, "Suffix") if index is not None else None
    if suffix is None:
        raise MalformedXML()
    error = _one(root, "ErrorDocument")
    error_key = _one(error, "Key") if error is not None else None
    if error is not None and error_key is None:
        raise MalformedXML()
    config = WebsiteConfiguration(
        index_suffix=_text(suffix).strip(),
        error_key=_text(error_key).strip() if error_key is not None else None,
    )
    website.validate(config)
    return config


def _count(parent: etree._Element, name: str) -> int | None:
    """An integer child (xsd:long at most) of ``parent``, None when absent."""
    element = _one(parent, name)
    if element is None:
        return None
    text = _text(element).strip()
    if not _LONG.fullmatch(text):
        raise MalformedXML()
    return int(text)


def _lifecycle_tag(element: etree._Element) -> tuple[str, str]:
    key, value = _one(element, "Key"), _one(element, "Value")
    if key is None or value is None:
        raise MalformedXML()
    return _text(key), _text(value)


def _lifecycle_filter(rule: etree._Element) -> LifecycleFilter:
    """A rule's <Filter> (one condition, or <And> of several) or its own old-style <Prefix>:
    exactly one of the two."""
    rule_prefix, element = _one(rule, "Prefix"), _one(rule, "Filter")
    if (rule_prefix is None) == (element is None):
        raise MalformedXML()
    if rule_prefix is not None:
        return LifecycleFilter(prefix=_text(rule_prefix), form="rule-prefix")
    assert element is not None
    conditions = [child for child in element if _name(child) is not None]
    if len(conditions) > 1:
        raise MalformedXML()
    if not conditions:
        return LifecycleFilter()
    form: FilterForm = "filter"
    if _name(conditions[0]) == "And":
        # Two or more conditions, all of which must hold.
        form, element = "and", conditions[0]
        if sum(_name(child) is not None for child in element) < 2:
            raise MalformedXML()
    prefix = _one(element, "Prefix")
    tags = [_lifecycle_tag(tag) for tag in _children(element, "Tag")]
    if form == "filter" and len(tags) > 1:
        raise MalformedXML()
    known = {"Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan"}
    if any(_name(child) not in known for child in element):
        raise MalformedXML()
    return LifecycleFilter(
        prefix=_text(prefix) if prefix is not None else "",
        tags=tuple(tags),
        size_greater_than=_count(element, "ObjectSizeGreaterThan"),
        size_less_than=_count(element, "ObjectSizeLessThan"),
        form=form,
    )


def _lifecycle_date(element: etree._Element) -> datetime:
    text = _text(element).strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise errors.InvalidArgument(
            "'Date' must be in ISO 8601 format", ArgumentName="Date", ArgumentValue=text
        ) from None
    return moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)


def parse_lifecycle_configuration(body: bytes) -> list[LifecycleRule]:
    """The rules of a PutBucketLifecycleConfiguration body, validated as S3 does (see
    gateway.s3.lifecycle); transitions are refused as not implemented."""
    root = _parse(body, "LifecycleConfiguration")
    rules = []
    for element in _children(root, "Rule"):
        for unsupported in ("Transition", "NoncurrentVersionTransition"):
            if _one(element, unsupported) is not None:
                raise errors.NotImplemented(
                    f"This gateway has no storage classes to move objects to: {unsupported}"
                    " is not implemented."
                )
        rule_id, status = _one(element, "ID"), _one(element, "Status")
        if status is None or _text(status).strip() not in ("Enabled", "Disabled"):
            raise MalformedXML()
        expiration = _one(element, "Expiration")
        date = marker = None
        if expiration is not None:
            found = _one(expiration, "Date")
            date = _lifecycle_date(found) if found is not None else None
            found = _one(expiration, "ExpiredObjectDeleteMarker")
            if found is not None:
                marker = _XSD_BOOLEAN.get(_text(found).strip())
                if marker is None:
                    raise MalformedXML()
            if date is None and marker is None and _one(expiration, "Days") is None:
                raise MalformedXML()
        noncurrent = _one(element, "NoncurrentVersionExpiration")
        if noncurrent is not None and _one(noncurrent, "NoncurrentDays") is None:
            raise MalformedXML()
        abort = _one(element, "AbortIncompleteMultipartUpload")
        if abort is not None and _one(abort, "DaysAfterInitiation") is None:
            raise MalformedXML()
        rules.append(
            LifecycleRule(
                id=_text(rule_id) if rule_id is not None else lifecycle.new_rule_id(),
                enabled=_text(status).strip() == "Enabled",
                filter=_lifecycle_filter(element),
                expiration_days=_count(expiration, "Days") if expiration is not None else None,
                expiration_date=date,
                expired_object_delete_marker=marker,
                noncurrent_days=_count(noncurrent, "NoncurrentDays")
                if noncurrent is not None
                else None,
                newer_noncurrent_versions=_count(noncurrent, "NewerNoncurrentVersions")
                if noncurrent is not None
                else None,
                abort_incomplete_upload_days=_count(abort, "DaysAfterInitiation")
                if abort is not None
                else None,
            )
        )
    lifecycle.validate(rules)
    return rules
