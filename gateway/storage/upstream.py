"""Object bytes in a bucket of an upstream S3 service, through one shared aiobotocore client.

Objects keep a readable 1:1 layout (``prefix + key``), so other tools can use the upstream
bucket directly; rendered variants get generated names under a reserved prefix. Every failure to
reach the upstream becomes a 503 the client can retry; idempotent calls are retried here first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from gateway import metrics
from gateway.config import UpstreamProfile
from gateway.errors import (
    KeyNotStorableError,
    StoredObjectChangedError,
    UpstreamRefusedError,
    UpstreamThrottledError,
    UpstreamUnavailableError,
)
from gateway.s3 import mime
from gateway.storage import hash_off_loop

log = logging.getLogger(__name__)

# The largest object one CopyObject may copy; larger ones are copied part by part.
MAX_COPY_SIZE = 5 * 1024**3
# Upstream bodies are read in chunks this large.
READ_CHUNK = 1024 * 1024
MAX_KEY_BYTES = 1024
# Path segments that URL normalisation (RFC 3986 section 5.2.4) removes: an upstream or a proxy
# in front of it that normalises "B/../C/k" would read and write "C/k", another bucket's object,
# or reach the variants prefix. AWS and moto keep keys literal, but the gateway cannot know what
# sits in front of an upstream, so keys whose upstream key has such a segment are refused.
DOT_SEGMENTS = frozenset({".", ".."})
# Upstream error codes that say "try again": the call is retried, then answered 503.
_RETRY_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
)
# Upstream refusals that are the client's to fix, answered as the same S3 error (the gateway
# checks these itself first; an upstream with stricter limits may still say them).
_CLIENT_ERRORS = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "EntityTooLarge"})
# Stored headers that travel to the upstream object too, as the PutObject parameter they are.
_UPSTREAM_HEADERS = {
    "cache-control": "CacheControl",
    "content-disposition": "ContentDisposition",
    "content-encoding": "ContentEncoding",
    "content-language": "ContentLanguage",
}
_CONNECTION_ERRORS = (
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ConnectionError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


class UpstreamChangedError(StoredObjectChangedError):
    """The upstream object is not the one recorded: its ETag no longer matches."""


class UpstreamMissingError(StoredObjectChangedError):
    """The upstream has no such object (or multipart upload)."""


@dataclass(frozen=True)
class UpstreamObject:
    """What the upstream says of one object (HeadObject, or a listing entry)."""

    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None = None
    user_metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectAttributes:
    """What an object written upstream carries besides its bytes, for other tools' sake."""

    content_type: str | None = None
    user_metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.content_type:
            params["ContentType"] = self.content_type
        # HTTP headers carry ASCII: other values travel RFC 2047 encoded, as S3 returns them.
        metadata = {
            name: mime.header_value(value)
            for name, value in self.user_metadata.items()
            if name.isascii()
        }
        if metadata:
            params["Metadata"] = metadata
        for name, parameter in _UPSTREAM_HEADERS.items():
            value = self.headers.get(name)
            if value is not None and value.isascii():
                params[parameter] = value
        return params


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


def _unavailable(operation: str, reason: str) -> UpstreamUnavailableError:
    return UpstreamUnavailableError(
        f"The upstream storage did not complete {operation} ({reason}). Please try again."
    )


class _StreamedBody:
    """A body botocore takes for a stream of known length (it is never read: the payload is
    unsigned) and aiohttp sends as it arrives (it is async iterable)."""

    def __init__(self, chunks: AsyncIterator[bytes], length: int) -> None:
        self._chunks = chunks
        self._length = length

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        raise io.UnsupportedOperation("a streamed body is read asynchronously")

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("a streamed body cannot seek")

    def tell(self) -> int:
        raise io.UnsupportedOperation("a streamed body cannot seek")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks


def has_dot_segment(upstream_key: str) -> bool:
    """Whether a path normalisation would change what ``upstream_key`` names."""
    return not DOT_SEGMENTS.isdisjoint(upstream_key.split("/"))


class _Reachability:
    """Whether the upstream answers, so an outage is logged once when it starts and once when
    it ends, not at every retry of every request.

    Back on the answer to a call made after the last failure (or RECOVERY_SECONDS after it):
    while an upstream goes down, calls already under way may still succeed as others fail.
    """

    RECOVERY_SECONDS = 1.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.reachable = True
        self._last_failure = 0.0

    def lost(self, reason: str) -> None:
        self._last_failure = time.monotonic()
        if self.reachable:
            self.reachable = False
            log.warning("upstream of profile %s unavailable: %s", self.name, reason)

    def answered(self, call_started: float) -> None:
        old_call = call_started <= self._last_failure
        if old_call and time.monotonic() - self._last_failure < self.RECOVERY_SECONDS:
            return
        self.reachable = True
        log.info("upstream of profile %s available again", self.name)


class UpstreamStore:
    """One upstream profile: its client, its key layout, and the calls the gateway makes."""

    def __init__(self, name: str, profile: UpstreamProfile) -> None:
        self.name = name
        self.profile = profile
        self.bucket = profile.bucket
        self._client: Any = None
        self._exit = contextlib.AsyncExitStack()
        self._reachability = _Reachability(name)

    async def open(self) -> None:
        profile = self.profile
        config = AioConfig(
            region_name=profile.region,
            signature_version="s3v4",
            connect_timeout=profile.connect_timeout_seconds,
            read_timeout=profile.read_timeout_seconds,
            max_pool_connections=profile.max_connections,
            # Retries are made here, where it is known which calls can be repeated (a streamed
            # body cannot be sent twice).
            retries={"total_max_attempts": 1},
            # Bodies are streamed, so they cannot be hashed before they are sent; the gateway
            # checks every byte itself and compares the upstream's ETag with its own MD5.
            s3={"addressing_style": profile.addressing_style, "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        credentials = {}
        if profile.access_key is not None:
            credentials = {
                "aws_access_key_id": profile.access_key,
                "aws_secret_access_key": profile.secret_key,
            }
        self._client = await self._exit.enter_async_context(
            get_session().create_client(
                "s3", endpoint_url=profile.endpoint_url, config=config, **credentials
            )
        )

    async def close(self) -> None:
        await self._exit.aclose()

    # Key layout.

    def bucket_prefix(self, bucket: str) -> str:
        return self.profile.key_prefix(bucket)

    def object_key(self, bucket: str, key: str) -> str:
        """The upstream key of ``key`` in gateway bucket ``bucket``; KeyNotStorableError when
        it has none (too long once prefixed, or inside the reserved variants prefix)."""
        upstream_key = self.bucket_prefix(bucket) + key
        if len(upstream_key.encode()) > MAX_KEY_BYTES:
            raise KeyNotStorableError(
                key,
                "Your key is too long.",
                max_size=MAX_KEY_BYTES - len(self.bucket_prefix(bucket).encode()),
            )
        if self.is_reserved(upstream_key):
            raise KeyNotStorableError(
                key, f"Keys under {self.profile.variants_prefix!r} are reserved in this bucket."
            )
        if has_dot_segment(upstream_key):
            raise KeyNotStorableError(
                key,
                "Object keys with '.' or '..' path segments cannot be stored in this bucket:"
                " its upstream storage could resolve them as paths.",
            )
        return upstream_key

    def is_reserved(self, upstream_key: str) -> bool:
        return upstream_key.startswith(self.profile.variants_prefix)

    # Calls, retried when that is safe.

    async def _call(
        self, operation: str, retry: bool = True, locked: bool = False, **params: Any
    ) -> dict[str, Any]:
        """One upstream call, retried when ``retry`` allows; ``locked``: made while the caller
        holds a database lock, so it gets a single attempt bounded by
        locked_call_timeout_seconds."""
        attempts = self.profile.max_attempts if retry and not locked else 1
        timeout = self.profile.locked_call_timeout_seconds if locked else None
        method: Callable[..., Awaitable[dict[str, Any]]] = getattr(self._client, operation)
        counted = metrics.current()
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            if counted is not None:
                counted.upstream_calls(self.name).inc()
            try:
                async with asyncio.timeout(timeout):
                    result = await method(**params)
            except botocore.exceptions.ClientError as exc:
                code, status = _error_code(exc)
                if counted is not None and status not in (404, 412):
                    counted.upstream_errors(self.name).inc()
                if code == "NoSuchBucket":
                    # The upstream bucket itself is missing: a misconfiguration or an upstream
                    # that lost it, never a sign that an object was deleted.
                    raise _unavailable(operation, "the upstream bucket does not exist") from exc
                # 409 ConditionalRequestConflict: a conditional write raced another write of
                # the key; like a failed condition, the caller decides what comes next.
                if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise UpstreamChangedError(params.get("Key", "")) from exc
                if status == 404 or code in ("NoSuchKey", "NoSuchUpload", "NotFound"):
                    raise UpstreamMissingError(params.get("Key", "")) from exc
                reason = f"the upstream answered {code or status}"
                if code in _CLIENT_ERRORS:
                    raise UpstreamRefusedError(
                        code, f"The upstream storage refused {operation}: {code}."
                    ) from exc
                if code not in _RETRY_CODES and status < 500:
                    log.warning("upstream refused %s: %s (%s)", operation, code, status)
                    raise _unavailable(operation, reason) from exc
                if attempt == attempts:
                    if code == "SlowDown":
                        raise UpstreamThrottledError(
                            "The upstream storage asks to reduce the request rate."
                        ) from exc
                    self._reachability.lost(reason)
                    raise _unavailable(operation, reason) from exc
            except _CONNECTION_ERRORS as exc:
                if counted is not None:
                    counted.upstream_errors(self.name).inc()
                reason = f"the upstream could not be reached: {type(exc).__name__}"
                if attempt == attempts:
                    self._reachability.lost(reason)
                    raise _unavailable(operation, reason) from exc
            else:
                if not self._reachability.reachable:
                    self._reachability.answered(started)
                return result
            if counted is not None:
                counted.upstream_retries(self.name).inc()
            await asyncio.sleep(self._backoff(attempt))
            log.debug("retrying upstream %s (attempt %d): %s", operation, attempt + 1, reason)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        # Full jitter: many gateways retrying at once do not hammer the upstream in step.
        return random.uniform(0, self.profile.retry_base_seconds * 2 ** (attempt - 1))

    # Objects.

    async def head(self, key: str, locked: bool = False) -> UpstreamObject | None:
        """What the upstream holds under ``key``; ``locked``: as for _call."""
        try:
            found = await self._call("head_object", locked=locked, Bucket=self.bucket, Key=key)
        except UpstreamMissingError:
            return None
        headers = {
            name: found[parameter]
            for name, parameter in _UPSTREAM_HEADERS.items()
            if found.get(parameter)
        }
        return UpstreamObject(
            key=key,
            size=found["ContentLength"],
            etag=found["ETag"],
            last_modified=found["LastModified"],
            content_type=found.get("ContentType"),
            user_metadata={
                name: mime.stored_value(value) for name, value in found.get("Metadata", {}).items()
            },
            headers=headers,
        )

    async def is_gone(self, key: str) -> bool:
        """Whether the upstream bucket exists and holds no ``key``: a HeadObject 404 cannot
        tell a missing object from a missing bucket; a listing can."""
        found, _ = await self.list_page(key, "", 1)
        return not found or found[0].key != key

    async def read(
        self, storage_key: str, start: int, length: int, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes [start, start + length) of an upstream object; with ``etag``, only of that
        version (UpstreamChangedError otherwise). A connection lost mid-stream resumes where it
        stopped, still pinned to the same version."""
        position, end = start, start + length
        failures = 0
        while position < end:
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": storage_key,
                "Range": f"bytes={position}-{end - 1}",
            }
            if etag is not None:
                params["IfMatch"] = etag
            response = await self._call("get_object", **params)
            try:
                async with response["Body"] as stream:
                    async for chunk in stream.iter_chunks(READ_CHUNK):
                        chunk = chunk[: end - position]
                        position += len(chunk)
                        yield chunk
                        if position >= end:
                            break
            except _CONNECTION_ERRORS as exc:
                failures += 1
                if failures >= self.profile.max_attempts:
                    raise _unavailable("get_object", f"the upstream stream broke: {exc}") from exc
                continue
            if position < end:
                # Pinned by If-Match, so the upstream's own object is short: not the client's.
                raise _unavailable("get_object", "the upstream object ended early")

    async def put(
        self,
        key: str,
        body: bytes,
        attributes: ObjectAttributes,
        md5: bytes | None = None,
        conditions: Mapping[str, str] | None = None,
    ) -> str:
        """One PutObject of a verified body; returns the upstream ETag."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body}
        params.update(attributes.params())
        if md5 is not None:
            params["ContentMD5"] = base64.b64encode(md5).decode()
        params.update(conditions or {})
        # A conditional write is not repeated: had the first attempt landed with its answer
        # lost, the retry would be refused by the write itself.
        found = await self._call("put_object", retry=not conditions, **params)
        return str(found["ETag"])

    async def delete(self, storage_key: str, locked: bool = False) -> None:
        """Delete an upstream object; a missing one is not an error. ``locked``: as for
        _call."""
        with contextlib.suppress(UpstreamMissingError):
            await self._call("delete_object", locked=locked, Bucket=self.bucket, Key=storage_key)

    async def copy(
        self,
        source_key: str,
        source_etag: str,
        size: int,
        key: str,
        attributes: ObjectAttributes,
    ) -> str:
        """A server-side copy of exactly that version of the source; returns the new ETag."""
        source = {"Bucket": self.bucket, "Key": source_key}
        if size > MAX_COPY_SIZE:
            return await self._copy_in_parts(source, source_etag, size, key, attributes)
        found = await self._call(
            "copy_object",
            Bucket=self.bucket,
            Key=key,
            CopySource=source,
            CopySourceIfMatch=source_etag,
            MetadataDirective="REPLACE",
            **attributes.params(),
        )
        return str(found["CopyObjectResult"]["ETag"])

    async def _copy_in_parts(
        self,
        source: dict[str, str],
        source_etag: str,
        size: int,
        key: str,
        attributes: ObjectAttributes,
    ) -> str:
        upload_id = await self.create_upload(key, attributes)
        try:
            parts = []
            part_size = MAX_COPY_SIZE // 5
            for number, start in enumerate(range(0, size, part_size), start=1):
                end = min(start + part_size, size) - 1
                etag = await self.upload_part_copy(
                    key, upload_id, number, source["Key"], source_etag, start, end
                )
                parts.append((number, etag))
            return await self.complete_upload(key, upload_id, parts)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.abort_upload(key, upload_id)
            raise

    async def list_page(
        self, prefix: str, start_after: str, limit: int = 1000
    ) -> tuple[list[UpstreamObject], bool]:
        """Up to ``limit`` objects under ``prefix`` after ``start_after``; and whether more
        follow."""
        found = await self._call(
            "list_objects_v2",
            Bucket=self.bucket,
            Prefix=prefix,
            StartAfter=start_after,
            MaxKeys=limit,
        )
        objects = [
            UpstreamObject(
                key=entry["Key"],
                size=entry["Size"],
                etag=entry["ETag"],
                last_modified=entry["LastModified"],
            )
            for entry in found.get("Contents", [])
        ]
        return objects, bool(found.get("IsTruncated"))

    # Multipart uploads: the gateway's map onto the upstream's own.

    async def create_upload(self, key: str, attributes: ObjectAttributes) -> str:
        found = await self._call(
            "create_multipart_upload", Bucket=self.bucket, Key=key, **attributes.params()
        )
        return str(found["UploadId"])

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: bytes | AsyncIterator[bytes],
        length: int,
        md5: bytes | None = None,
    ) -> str:
        """One part; a streamed body is sent once (not retried: it cannot be replayed)."""
        params: dict[str, Any] = {}
        if md5 is not None:
            params["ContentMD5"] = base64.b64encode(md5).decode()
        found = await self._call(
            "upload_part",
            retry=isinstance(body, bytes),
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=part_number,
            Body=body if isinstance(body, bytes) else _StreamedBody(body, length),
            ContentLength=length,
            **params,
        )
        return str(found["ETag"])

    async def upload_part_copy(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        source_key: str,
        source_etag: str,
        start: int,
        end: int,
    ) -> str:
        found = await self._call(
            "upload_part_copy",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=part_number,
            CopySource={"Bucket": self.bucket, "Key": source_key},
            CopySourceIfMatch=source_etag,
            CopySourceRange=f"bytes={start}-{end}",
        )
        return str(found["CopyPartResult"]["ETag"])

    async def complete_upload(
        self,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        conditions: Mapping[str, str] | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {
                "Parts": [{"PartNumber": number, "ETag": etag} for number, etag in parts]
            },
            **(conditions or {}),
        }
        # A conditional completion is not repeated: had the first attempt landed with its
        # answer lost, the retry would be refused by the completion itself.
        found = await self._call("complete_multipart_upload", retry=not conditions, **params)
        return str(found["ETag"])

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort an upstream multipart upload; one already gone is not an error."""
        with contextlib.suppress(UpstreamMissingError):
            await self._call(
                "abort_multipart_upload", Bucket=self.bucket, Key=key, UploadId=upload_id
            )

    # The BlobStore interface, for derivatives (generated names under the variants prefix).

    def new_key(self) -> str:
        return self.profile.variants_prefix + uuid.uuid4().hex

    def read_now(self, storage_key: str, start: int, length: int) -> None:
        return None

    def local_path(self, storage_key: str) -> None:
        return None

    async def create(
        self,
        storage_key: str,
        on_data: Callable[[bytes], None] | None = None,
        attributes: ObjectAttributes | None = None,
    ) -> UpstreamWriter:
        return UpstreamWriter(self, storage_key, on_data, attributes or ObjectAttributes())


class UpstreamWriter:
    """A blob written to one upstream key; nothing replaces what that key holds until commit.

    Bodies up to the part size are kept in memory and sent in one PutObject at commit; larger
    ones go out as an upstream multipart upload, a few parts at a time while the next one
    arrives, and are completed at commit. So a body whose digest turns out wrong never becomes
    visible, and memory holds at most parts_in_flight + 1 parts.
    """

    def __init__(
        self,
        store: UpstreamStore,
        storage_key: str,
        on_data: Callable[[bytes], None] | None,
        attributes: ObjectAttributes,
    ) -> None:
        self.storage_key = storage_key
        self.size = 0
        # The upstream's ETag once committed.
        self.etag: str | None = None
        self._store = store
        self._on_data = on_data
        self._attributes = attributes
        self._part_size = store.profile.part_size
        self._pending: list[bytes] = []
        self._pending_size = 0
        # The unsent tail, already hashed by flush, and its MD5.
        self._tail: bytes | None = None
        self._tail_md5 = b""
        self._upload_id: str | None = None
        self._parts: list[tuple[int, str]] = []
        self._next_part = 1
        self._inflight: set[asyncio.Task[None]] = set()
        self._max_inflight = store.profile.parts_in_flight

    @property
    def is_multipart(self) -> bool:
        """Whether the body went out as an upstream multipart upload (it outgrew a part)."""
        return self._upload_id is not None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self._part_size:
            part = self._take_pending()
            md5 = await hash_off_loop(self._digest, part)
            # A bounded number of parts in flight: the upstream keeps pace or the client waits.
            await self._wait_inflight(self._max_inflight - 1)
            if self._upload_id is None:
                self._upload_id = await self._store.create_upload(
                    self.storage_key, self._attributes
                )
            self._inflight.add(asyncio.create_task(self._send_part(part, md5)))

    def _take_pending(self) -> bytes:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        return data

    def _digest(self, data: bytes) -> bytes:
        """Feed ``on_data``; the MD5 of ``data`` alone, for the upstream to check the part."""
        if self._on_data is not None:
            self._on_data(data)
        return hashlib.md5(data).digest()

    async def _send_part(self, data: bytes, md5: bytes) -> None:
        assert self._upload_id is not None
        number = self._next_part
        self._next_part += 1
        etag = await self._store.upload_part(
            self.storage_key, self._upload_id, number, data, len(data), md5
        )
        self._parts.append((number, etag))

    async def _wait_inflight(self, leave: int = 0) -> None:
        """Wait until at most ``leave`` parts are in flight; a failed part fails the write."""
        while len(self._inflight) > leave:
            done, self._inflight = await asyncio.wait(
                self._inflight, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                task.result()

    async def flush(self) -> None:
        await self._wait_inflight()
        tail = self._take_pending()
        if tail:
            self._tail_md5 = await hash_off_loop(self._digest, tail)
            self._tail = (self._tail or b"") + tail

    async def commit(
        self, md5: bytes | None = None, conditions: Mapping[str, str] | None = None
    ) -> None:
        """Make the blob visible; ``md5``: of the whole body, when the caller has it, so the
        upstream checks it too. ``conditions``: IfMatch / IfNoneMatch for the upstream."""
        await self.flush()
        tail = self._tail or b""
        if self._upload_id is None:
            self.etag = await self._store.put(
                self.storage_key, tail, self._attributes, md5, conditions
            )
            return
        if tail:
            await self._send_part(tail, self._tail_md5)
            # A commit refused by its conditions may be tried again: the part is sent once.
            self._tail = None
        self.etag = await self._store.complete_upload(
            self.storage_key, self._upload_id, sorted(self._parts), conditions
        )

    async def abort(self) -> None:
        self._pending.clear()
        for task in self._inflight:
            task.cancel()
        if self._inflight:
            await asyncio.wait(self._inflight)
        for task in self._inflight:
            # Retrieved, so a part that had failed is not reported again as unhandled.
            if not task.cancelled():
                task.exception()
        self._inflight.clear()
        if self._upload_id is not None:
            try:
                await self._store.abort_upload(self.storage_key, self._upload_id)
            except UpstreamUnavailableError:
                log.warning("could not abort upstream upload of %s", self.storage_key)
