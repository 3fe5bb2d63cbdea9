"""Request bodies: plain or aws-chunked, streamed, and trusted only once every digest matches."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientPayloadError, HttpVersion11

from gateway.api.context import S3Request
from gateway.s3 import checksums, errors, sigv4
from gateway.s3.checksums import BodyDigests
from gateway.s3.chunked import AwsChunkedDecoder, ChunkSignatureVerifier

_CHUNKED_MODES = frozenset(
    {
        sigv4.STREAMING_SIGNED,
        sigv4.STREAMING_SIGNED_TRAILER,
        sigv4.STREAMING_UNSIGNED_TRAILER,
    }
)


# ASCII only: str.isdigit() accepts digits int() then refuses, such as "²".
_DECIMAL = re.compile(r"[0-9]{1,19}")


def _content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise errors.InvalidDigest(**{"Content-MD5": value})
    return digest


def _declared_checksum(headers: Any) -> tuple[str | None, str | None, bool]:
    """(algorithm, expected value if sent as a header, whether it arrives in a trailer)."""
    for algorithm in checksums.ALGORITHMS:
        value = headers.get(checksums.header_name(algorithm))
        if value is not None:
            return algorithm, value.strip(), False
    trailer = headers.get("x-amz-trailer")
    if trailer:
        trailed = checksums.algorithm_from_header(trailer.strip().lower())
        if trailed is None:
            raise errors.InvalidRequest(f"Unsupported trailer: {trailer}")
        return trailed, None, True
    announced = headers.get("x-amz-sdk-checksum-algorithm") or headers.get(
        "x-amz-checksum-algorithm"
    )
    if announced:
        # Announced without a value: compute it so it can be stored and returned.
        name = announced.strip().upper()
        checksums.new_checksum(name)
        return name, None, False
    return None, None, False


async def send_continue(req: S3Request) -> None:
    """Answer ``Expect: 100-continue`` only once the request has been accepted, so a rejected
    upload is never transmitted."""
    http = req.http
    expect = http.headers.get("Expect", "")
    if http.version == HttpVersion11 and expect.lower() == "100-continue":
        await http.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        http.writer.output_size = 0


class RequestBody:
    """The payload of a write request, decoded as it streams.

    Iterate it to get the payload; after the last piece, ``verify`` checks every digest the
    request declared. Nothing may be committed before ``verify`` returns.
    """

    def __init__(
        self,
        req: S3Request,
        max_size: int,
        upload_checksum: str | None = None,
        checksum_headers: bool = True,
    ) -> None:
        """``upload_checksum``: the checksum algorithm of the multipart upload this body is a
        part of; the part must use it, and it is computed when the request declares none.
        ``checksum_headers``: whether x-amz-checksum-* headers describe this body (those of
        CompleteMultipartUpload describe the object it makes)."""
        self._req = req
        http = req.http
        headers = req.headers
        self.payload_hash = req.auth.payload_hash if req.auth else sigv4.UNSIGNED_PAYLOAD
        self.chunked = self.payload_hash in _CHUNKED_MODES
        if http.content_length is None and "chunked" not in headers.get("Transfer-Encoding", ""):
            raise errors.MissingContentLength()
        if self.chunked:
            decoded = headers.get("x-amz-decoded-content-length")
            if decoded is None or not _DECIMAL.fullmatch(decoded):
                raise errors.MissingContentLength(
                    "You must provide the x-amz-decoded-content-length header."
                )
            self.length: int | None = int(decoded)
        else:
            self.length = http.content_length
        if self.length is not None and self.length > max_size:
            raise errors.EntityTooLarge(ProposedSize=str(self.length), MaxSizeAllowed=str(max_size))
        self._max_size = max_size
        self.content_md5 = _content_md5(headers.get("Content-MD5"))
        algorithm, self._expected_checksum, self._checksum_in_trailer = (
            _declared_checksum(headers) if checksum_headers else (None, None, False)
        )
        if upload_checksum is not None:
            if algorithm is not None and algorithm != upload_checksum:
                raise errors.InvalidRequest(
                    "Checksum Type mismatch occurred, expected checksum Type: "
                    f"{upload_checksum.lower()}, actual checksum Type: {algorithm.lower()}"
                )
            algorithm = upload_checksum
        if self._checksum_in_trailer and not self.chunked:
            raise errors.InvalidRequest("x-amz-trailer requires an aws-chunked body.")
        signed_hash = self.payload_hash not in sigv4.PAYLOAD_MARKERS
        self.digests = BodyDigests(sha256=signed_hash, checksum_algorithm=algorithm)
        self._trailers: dict[str, str] = {}
        self.received = 0

    async def _raw(self) -> AsyncIterator[bytes]:
        await send_continue(self._req)
        content = self._req.http.content
        idle = self._req.config.limits.body_idle_timeout_seconds
        try:
            while True:
                # A client that stops sending must not hold the upload (and its blob) forever.
                async with asyncio.timeout(idle):
                    data = await content.readany()
                if not data:
                    return
                yield data
        except TimeoutError:
            raise errors.RequestTimeout() from None
        except ClientPayloadError as exc:
            raise errors.IncompleteBody() from exc

    def _decoder(self) -> AwsChunkedDecoder:
        verifier = None
        if self.payload_hash != sigv4.STREAMING_UNSIGNED_TRAILER:
            auth = self._req.auth
            assert auth is not None and self._req.signing_key is not None
            verifier = ChunkSignatureVerifier(
                self._req.signing_key, auth.amz_date, auth.scope, auth.signature
            )
        return AwsChunkedDecoder(
            verifier=verifier,
            expect_trailer=self.payload_hash != sigv4.STREAMING_SIGNED,
            decoded_length=self.length,
        )

    def _count(self, size: int) -> None:
        self.received += size
        if self.received > self._max_size:
            raise errors.EntityTooLarge(MaxSizeAllowed=str(self._max_size))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if not self.chunked:
            async for data in self._raw():
                self._count(len(data))
                yield data
            if self.length is not None and self.received != self.length:
                raise errors.IncompleteBody()
            return
        decoder = self._decoder()
        async for data in self._raw():
            for piece in decoder.feed(data):
                self._count(len(piece))
                yield piece
        self._trailers = decoder.finish()

    def verify(self) -> dict[str, str]:
        """Check the payload against what the request declared; return checksums to store."""
        digests = self.digests
        if digests.sha256 is not None and digests.sha256.hexdigest() != self.payload_hash:
            raise errors.XAmzContentSHA256Mismatch(
                ClientComputedContentSHA256=self.payload_hash,
                S3ComputedContentSHA256=digests.sha256.hexdigest(),
            )
        if self.content_md5 is not None and digests.md5.digest() != self.content_md5:
            raise errors.BadDigest(
                ExpectedDigest=base64.b64encode(self.content_md5).decode(),
                CalculatedDigest=base64.b64encode(digests.md5.digest()).decode(),
            )
        algorithm = digests.checksum_algorithm
        if algorithm is None or digests.checksum is None:
            return {}
        expected = self._expected_checksum
        if self._checksum_in_trailer:
            expected = self._trailers.get(checksums.header_name(algorithm))
            if expected is None:
                raise errors.InvalidRequest(
                    f"The {checksums.header_name(algorithm)} trailer was announced but not sent."
                )
        actual = digests.checksum.digest_b64()
        if expected is not None and expected != actual:
            raise errors.BadDigest(
                f"The {algorithm} you specified did not match the calculated checksum."
            )
        return {algorithm: actual}
