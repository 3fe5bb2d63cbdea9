"""Request ids, the access log and request metrics, and the one place where errors become S3
XML documents."""

from __future__ import annotations

import logging
import secrets
import time
from urllib.parse import unquote

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import errors as gateway_errors
from gateway import metrics as gateway_metrics
from gateway.api.context import LIVE, RECORD, S3_REQUEST, RequestRecord
from gateway.config import in_networks
from gateway.logs import ACCESS, ACCESS_LOGGER
from gateway.meta.db import DatabaseUnavailableError
from gateway.s3 import errors
from gateway.s3.xml import error_document

log = logging.getLogger(ACCESS_LOGGER)

REQUEST_ID = web.RequestKey("request_id", str)
# The response whose headers went out, if any: after that no error document can be sent.
SENT_RESPONSE = web.RequestKey("sent_response", web.StreamResponse)


def new_request_id() -> str:
    return secrets.token_hex(8).upper()


def error_response(request: web.Request, error: errors.S3Error, request_id: str) -> web.Response:
    record = request.get(RECORD)
    if record is not None:
        record.error = error.code
    resource = unquote(request.raw_path.partition("?")[0])
    headers = error.headers()
    if request.method == "HEAD" or error.status == 304:
        # HEAD answers carry no body.
        response = web.Response(status=error.status, headers=headers)
    else:
        body = error_document(error.code, error.message, resource, request_id, error.extra)
        response = web.Response(
            status=error.status, body=body, content_type="application/xml", headers=headers
        )
    if request.can_read_body and not request.content.is_eof():
        # The body was not read (rejected before it was, or never sent after Expect:
        # 100-continue went unanswered): the connection cannot carry another request.
        response.force_close()
    return response


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streamed or not, names its request id."""
    request_id = request.get(REQUEST_ID) or new_request_id()
    response.headers["x-amz-request-id"] = request_id
    response.headers["x-amz-id-2"] = request_id
    request[SENT_RESPONSE] = response


@web.middleware
async def s3_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request[REQUEST_ID] = new_request_id()
    record = request[RECORD] = RequestRecord()
    started = time.perf_counter()
    metrics = gateway_metrics.current()
    if metrics is not None:
        metrics.requests_in_flight += 1
    try:
        response = await _answer(request, handler, request_id)
    finally:
        if metrics is not None:
            metrics.requests_in_flight -= 1
    seconds = time.perf_counter() - started
    bytes_out = record.bytes_out
    if isinstance(response, web.Response) and request.method != "HEAD":
        body = response.body
        if isinstance(body, bytes):
            bytes_out += len(body)
    # The body bytes that arrived, whether or not a handler read them all.
    bytes_in = request.content.total_bytes if request.body_exists else 0
    operation = record.operation or "Unknown"
    if metrics is not None:
        metrics.request(operation, response.status, seconds, bytes_in, bytes_out)
        if response.status == 503 and record.error == "SlowDown":
            metrics.slowdowns.inc()
    if log.isEnabledFor(logging.INFO):
        _log_access(request, request_id, record, operation, response, seconds, bytes_in, bytes_out)
    return response


async def _answer(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        sent = request.get(SENT_RESPONSE)
        if sent is not None:
            return _cut_off(request, sent, exc, request_id)
        return _answer_error(request, exc, request_id)


def client_address(request: web.Request) -> str | None:
    """The peer's address, or the client's as X-Forwarded-For names it when the peer (and
    each hop after the client) is a trusted proxy."""
    remote = request.remote
    trusted = request.app[LIVE].current.config.trusted_proxies
    forwarded = request.headers.get("X-Forwarded-For")
    if not trusted or not forwarded or not in_networks(remote, trusted):
        return remote
    # Right to left: the nearest hop not itself a trusted proxy is the client.
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop
    return hops[0] if hops else remote


def _log_access(
    request: web.Request,
    request_id: str,
    record: RequestRecord,
    operation: str,
    response: web.StreamResponse,
    seconds: float,
    bytes_in: int,
    bytes_out: int,
) -> None:
    req = request.get(S3_REQUEST)
    fields = {
        "request_id": request_id,
        "remote": client_address(request),
        "access_key": req.credential.access_key if req and req.credential else None,
        "operation": operation,
        "bucket": req.bucket if req else None,
        "key": req.key if req else None,
        "status": response.status,
        "error": record.error,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "duration_ms": round(seconds * 1000, 2),
        "variant": record.variant,
        "variant_result": record.variant_result,
        "render_ms": record.render_ms,
        "user_agent": request.headers.get("User-Agent"),
    }
    log.info("%s %s %d", request.method, request.raw_path, response.status, extra={ACCESS: fields})


_UPSTREAM_REFUSALS: dict[str, type[errors.S3Error]] = {
    "InvalidPart": errors.InvalidPart,
    "InvalidPartOrder": errors.InvalidPartOrder,
    "EntityTooSmall": errors.EntityTooSmall,
    "EntityTooLarge": errors.EntityTooLarge,
}


def quota_exceeded(bucket: str, limit: str, value: int) -> errors.S3Error:
    """QuotaExceeded, naming the limit the write would pass."""
    return errors.QuotaExceeded(
        f"This write would exceed the quota of bucket {bucket} ({limit}: {value:,}).",
        BucketName=bucket,
        QuotaLimit=limit,
        QuotaValue=str(value),
    )


def s3_error_of(exc: Exception) -> errors.S3Error | None:
    """The S3 error that answers ``exc``, when it is one of the S3 or gateway errors."""
    if isinstance(exc, errors.S3Error):
        return exc
    if not isinstance(exc, gateway_errors.GatewayError):
        return None
    match exc:
        case gateway_errors.BucketGoneError(bucket=bucket):
            return errors.NoSuchBucket(BucketName=bucket)
        case gateway_errors.QuotaExceededError(bucket=bucket, limit=limit, value=value):
            return quota_exceeded(bucket, limit, value)
        case gateway_errors.UploadGoneError(upload_id=upload_id):
            return errors.NoSuchUpload(UploadId=upload_id) if upload_id else errors.NoSuchUpload()
        case gateway_errors.StoredDataCorruptError():
            # Logged where it was detected, with the blob's name; the client learns no more.
            return errors.InternalError("The stored object failed its integrity check.")
        case gateway_errors.ObjectChangedError():
            return errors.SlowDown("The object changed while it was being read. Please try again.")
        case gateway_errors.UpstreamThrottledError():
            return errors.SlowDown(str(exc))
        case gateway_errors.UpstreamUnavailableError():
            return errors.ServiceUnavailable(str(exc))
        case gateway_errors.UpstreamRefusedError(code=code, message=message):
            return _UPSTREAM_REFUSALS[code](message)
        case gateway_errors.KeyNotStorableError(key=key, message=message, max_size=None):
            return errors.InvalidArgument(message, ArgumentName="key", ArgumentValue=key)
        case gateway_errors.KeyNotStorableError(key=key, max_size=max_size):
            return errors.KeyTooLongError(Size=str(len(key.encode())), MaxSizeAllowed=str(max_size))
    return None


def _answer_error(request: web.Request, exc: Exception, request_id: str) -> web.Response:
    """Called while ``exc`` is being handled (so log.exception sees its traceback)."""
    error = s3_error_of(exc)
    if error is not None:
        return error_response(request, error, request_id)
    if isinstance(exc, web.HTTPException):
        # aiohttp's own rejections (e.g. a request line it cannot route) still speak S3.
        error = errors.InvalidRequest(exc.reason) if exc.status < 500 else errors.InternalError()
        return error_response(request, error, request_id)
    if isinstance(exc, ConnectionError):
        # The client went away mid-request; nothing was committed. The answer will not reach
        # it, but aiohttp discards it quietly instead of logging a traceback.
        log.info("%s %s: client went away (%s)", request.method, request.raw_path, exc)
        response = error_response(request, errors.IncompleteBody(), request_id)
        response.force_close()
        return response
    if isinstance(exc, DatabaseUnavailableError):
        # Logged once per outage where it was detected; a traceback per request would flood
        # the log while the database is down.
        log.debug("%s %s: database unavailable (%s)", request.method, request.raw_path, exc)
        error = errors.ServiceUnavailable("The service is unavailable. Please try again.")
        return error_response(request, error, request_id)
    if isinstance(exc, asyncpg.CharacterNotInRepertoireError):
        # A NUL in some client-supplied text that validation missed: Postgres text cannot
        # hold it. Still the client's input, never a server fault.
        return error_response(
            request, errors.InvalidArgument("Invalid character in the request."), request_id
        )
    log.exception("%s %s failed (request %s)", request.method, request.raw_path, request_id)
    return error_response(request, errors.InternalError(), request_id)


def _cut_off(
    request: web.Request, sent: web.StreamResponse, exc: Exception, request_id: str
) -> web.StreamResponse:
    """Headers and part of the body are out: a new response would land inside the body. Cut
    the connection so the client sees a short read, never a corrupt object."""
    if isinstance(exc, DatabaseUnavailableError):
        log.info("%s %s cut short: database unavailable", request.method, request.raw_path)
    elif not isinstance(exc, ConnectionError):
        log.exception(
            "%s %s failed mid-body (request %s)", request.method, request.raw_path, request_id
        )
    if request.transport is not None:
        request.transport.abort()
    return sent
