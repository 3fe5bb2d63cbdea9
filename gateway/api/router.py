"""Resolve a request to bucket, key and operation (path style or virtual-host style)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from gateway.api import (
    acl,
    buckets,
    cors,
    lifecycle,
    listing,
    multipart,
    objects,
    policy,
    post_object,
    tagging,
    variants,
    website,
)
from gateway.api.auth import authenticate
from gateway.api.context import LIVE, POOL, RECORD, S3_REQUEST, S3Request
from gateway.api.metrics import get_metrics
from gateway.live import Snapshot
from gateway.meta.db import ping
from gateway.s3 import errors
from gateway.s3.query import EMPTY, decode_component, parse_query

Operation = Callable[[S3Request], Awaitable[web.StreamResponse]]

# Sub-resources of S3 that this gateway does not serve: answered 501, never misread as a plain
# GET/PUT of the bucket or object (which could, say, overwrite an object with an ACL document).
UNSUPPORTED_SUBRESOURCES = frozenset(
    {
        "accelerate", "analytics", "attributes", "encryption", "intelligent-tiering",
        "inventory", "legal-hold", "logging", "metrics", "notification",
        "object-lock", "ownershipControls", "policyStatus", "publicAccessBlock",
        "replication", "requestPayment", "restore", "retention", "select", "tagging", "torrent",
    }
)  # fmt: skip

# Configuration sub-resources of a bucket, by method.
BUCKET_SUBRESOURCES: dict[str, dict[str, Operation]] = {
    "cors": {
        "GET": cors.get_bucket_cors,
        "PUT": cors.put_bucket_cors,
        "DELETE": cors.delete_bucket_cors,
    },
    "acl": {"GET": acl.get_bucket_acl, "PUT": acl.put_bucket_acl},
    "website": {
        "GET": website.get_bucket_website,
        "PUT": website.put_bucket_website,
        "DELETE": website.delete_bucket_website,
    },
    "lifecycle": {
        "GET": lifecycle.get_bucket_lifecycle_configuration,
        "PUT": lifecycle.put_bucket_lifecycle_configuration,
        "DELETE": lifecycle.delete_bucket_lifecycle,
    },
    "policy": {
        "GET": policy.get_bucket_policy,
        "PUT": policy.put_bucket_policy,
        "DELETE": policy.delete_bucket_policy,
    },
}


# Handlers whose S3 name is not their own name in CamelCase.
_OPERATION_NAMES = {
    "list_objects_v2_handler": "ListObjectsV2",
    "list_objects_handler": "ListObjects",
    "get_object_variant": "GetObject",
    "head_object_variant": "HeadObject",
    "post_object": "PostObject",
    "preflight": "PreflightRequest",
}
_operation_names: dict[Operation, str] = {}


def operation_name(operation: Operation) -> str:
    """The S3 name of an operation handler (``put_object``: PutObject), for logs and
    metrics."""
    name = _operation_names.get(operation)
    if name is None:
        handler = getattr(operation, "__name__", "unknown")
        name = _OPERATION_NAMES.get(handler) or "".join(
            word.capitalize() for word in handler.split("_")
        )
        _operation_names[operation] = name
    return name


def split_target(
    host: str, raw_path: str, base_domains: list[str]
) -> tuple[str | None, str | None, bool]:
    """(bucket, key, virtual_host) from the Host header and the raw path.

    The key keeps every '/' as sent. The bucket is split off before decoding: an encoded slash
    belongs to the bucket name, as in S3, so ``/private%2Fdoc.txt`` never reads ``private/doc.txt``
    (a proxy filtering by path prefix in front would be bypassed).
    """
    hostname = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else ""
    for domain in base_domains:
        if hostname.endswith("." + domain):
            bucket = hostname[: -len(domain) - 1]
            key = decode_component(raw_path)[1:]
            return bucket, key or None, True
    raw_bucket, _, raw_key = raw_path[1:].partition("/")
    if not raw_bucket:
        return None, None, False
    bucket = decode_component(raw_bucket)
    if "/" in bucket:
        raise errors.InvalidBucketName(BucketName=bucket)
    # "/bucket" and "/bucket/" both name the bucket itself.
    return bucket, decode_component(raw_key) or None, False


def pick_operation(method: str, bucket: str | None, key: str | None, req: S3Request) -> Operation:
    query = req.query
    unsupported = set(UNSUPPORTED_SUBRESOURCES.intersection(query))
    if key is not None:
        # Tags of objects are served; those of buckets are not.
        unsupported.discard("tagging")
    if unsupported:
        raise errors.NotImplemented(
            f"This gateway does not implement the {sorted(unsupported)[0]} sub-resource."
        )
    if bucket is None:
        if method == "GET":
            return buckets.list_buckets
        raise errors.MethodNotAllowed("GET")
    if "versioning" in query or "versions" in query:
        if key is None:
            if "versioning" in query:
                return _by_method(
                    method,
                    {"GET": buckets.get_bucket_versioning, "PUT": buckets.put_bucket_versioning},
                )
            return _by_method(method, {"GET": listing.list_object_versions})
        raise errors.NotImplemented("Versioning belongs to a bucket, not to an object.")
    if key is None:
        for subresource, subresource_table in BUCKET_SUBRESOURCES.items():
            if subresource in query:
                return _by_method(method, subresource_table)
        if "uploadId" in query or "partNumber" in query:
            raise errors.InvalidRequest("uploadId and partNumber address an object key.")
        if "uploads" in query:
            if method == "GET":
                return listing.list_multipart_uploads
            raise errors.MethodNotAllowed("GET")
        if method == "GET":
            if "location" in query:
                return buckets.get_bucket_location
            if query.get("list-type") == "2":
                return listing.list_objects_v2_handler
            return listing.list_objects_handler
        table: dict[str, Operation] = {
            "PUT": buckets.create_bucket,
            "DELETE": buckets.delete_bucket,
            "HEAD": buckets.head_bucket,
        }
        if method == "POST":
            # DeleteObjects, or a browser's form upload (POST Object).
            return objects.delete_objects if "delete" in query else post_object.post_object
        return _by_method(method, table, "GET, PUT, DELETE, HEAD, POST")
    if {"cors", "policy", "website", "lifecycle"}.intersection(query):
        raise errors.NotImplemented(
            "CORS rules, policies, websites and lifecycle rules belong to a bucket, not to an"
            " object."
        )
    if "acl" in query:
        return _by_method(method, {"GET": acl.get_object_acl, "PUT": acl.put_object_acl})
    if "tagging" in query:
        return _by_method(
            method,
            {
                "GET": tagging.get_object_tagging,
                "PUT": tagging.put_object_tagging,
                "DELETE": tagging.delete_object_tagging,
            },
        )
    if "uploads" in query or "uploadId" in query:
        return _multipart_operation(method, req)
    if "partNumber" in query and method not in ("GET", "HEAD"):
        # Never a plain PutObject or DeleteObject: the client meant a part of some upload.
        raise errors.InvalidRequest("A partNumber without an uploadId can only read an object.")
    if "variant" in query:
        # A variant is read-only: a PUT or DELETE of one never touches the object itself.
        return _by_method(
            method, {"GET": variants.get_object_variant, "HEAD": variants.head_object_variant}
        )
    if method == "PUT":
        if "x-amz-copy-source" in req.headers:
            return objects.copy_object
        return objects.put_object
    table = {
        "GET": objects.get_object,
        "HEAD": objects.head_object,
        "DELETE": objects.delete_object,
    }
    return _by_method(method, table, "GET, PUT, DELETE, HEAD")


def _by_method(method: str, table: Mapping[str, Operation], allowed: str = "") -> Operation:
    """The operation ``table`` has for ``method``; else MethodNotAllowed naming ``allowed``
    (by default the table's methods)."""
    operation = table.get(method)
    if operation is None:
        raise errors.MethodNotAllowed(allowed or ", ".join(table))
    return operation


def is_post_form(method: str, bucket: str | None, key: str | None, req: S3Request) -> bool:
    """Whether a request is a browser's form upload (POST Object): it is signed by its policy
    fields, so what its headers or query carry is no credential, and no refusal either."""
    return (
        method == "POST"
        and bucket is not None
        and key is None
        and "delete" not in req.query
        and req.headers.get("Content-Type", "").lower().startswith("multipart/form-data")
    )


def _multipart_operation(method: str, req: S3Request) -> Operation:
    if "uploads" in req.query:
        if method == "POST":
            return multipart.create_multipart_upload
        raise errors.MethodNotAllowed("POST")
    if method == "PUT":
        if "x-amz-copy-source" in req.headers:
            return multipart.upload_part_copy
        return multipart.upload_part
    table: dict[str, Operation] = {
        "POST": multipart.complete_multipart_upload,
        "DELETE": multipart.abort_multipart_upload,
        "GET": multipart.list_parts,
    }
    return _by_method(method, table, "GET, PUT, POST, DELETE")


async def health(request: web.Request) -> web.Response:
    if await ping(request.app[POOL]):
        return web.Response(text="ok\n")
    return web.Response(status=503, text="database unreachable\n")


def website_bucket(host: str, website_domains: list[str]) -> str | None:
    """The bucket a website host (``<bucket>.<website domain>``) names; None for other hosts."""
    hostname = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else ""
    for domain in website_domains:
        if hostname.endswith("." + domain):
            return hostname[: -len(domain) - 1]
    return None


async def serve_website(
    request: web.Request, snapshot: Snapshot, bucket: str, raw_path: str, raw_query: str
) -> web.StreamResponse:
    """A request on a website host: anonymous whatever it carries (no signature is read);
    the path and query are decoded by the website, whose errors are HTML pages."""
    req = S3Request(
        http=request,
        snapshot=snapshot,
        bucket=bucket,
        key=None,
        raw_path=raw_path,
        raw_query=raw_query,
        query=EMPTY,
        headers=request.headers,
        virtual_host=True,
    )
    request[S3_REQUEST] = req
    return await website.serve(req)


async def dispatch(request: web.Request) -> web.StreamResponse:
    raw_path, _, raw_query = request.raw_path.partition("?")
    # Taken once: the request keeps this configuration to its end, whatever a reload does.
    snapshot = request.app[LIVE].current
    config = snapshot.config
    site = website_bucket(request.headers.get("Host", ""), config.website_domains)
    record = request[RECORD]
    if site is not None:
        record.operation = "Website"
        return await serve_website(request, snapshot, site, raw_path, raw_query)
    bucket, key, virtual_host = split_target(
        request.headers.get("Host", ""), raw_path, config.base_domains
    )
    # The gateway's own endpoints belong to the bare host; on a bucket's host, the same path is
    # an object key of that bucket.
    if not virtual_host and raw_path.startswith("/_gateway/"):
        if raw_path == "/_gateway/health" and request.method in ("GET", "HEAD"):
            record.operation = "Health"
            return await health(request)
        if raw_path == "/_gateway/metrics" and request.method == "GET":
            # Prometheus brings a bearer token, never an S3 signature.
            record.operation = "Metrics"
            return await get_metrics(request)
        raise errors.NoSuchKey()
    req = S3Request(
        http=request,
        snapshot=snapshot,
        bucket=bucket,
        key=key,
        raw_path=raw_path,
        raw_query=raw_query,
        query=parse_query(raw_query),
        headers=request.headers,
        virtual_host=virtual_host,
    )
    request[S3_REQUEST] = req
    if request.method == "OPTIONS":
        # A CORS preflight: browsers never sign one.
        record.operation = "PreflightRequest"
        return await cors.preflight(req)
    # Chosen before authentication so a refused request is logged and counted under its
    # operation too; a request no operation answers is refused after authentication, as ever.
    operation: Operation | None = None
    try:
        operation = pick_operation(request.method, bucket, key, req)
        record.operation = operation_name(operation)
    except errors.S3Error as exc:
        refusal = exc
    if not is_post_form(request.method, bucket, key, req):
        authenticate(req)
    if operation is None:
        raise refusal
    return await operation(req)


async def no_expectation(request: web.Request) -> None:
    """Expect handler: ``100-continue`` is answered when the body is first read, after the
    request has been authorised; other expectations are ignored, as S3 does."""
