"""Incremental, sans-IO decoder for aws-chunked request bodies (SigV4 streaming uploads).

Handles the three framings S3 clients send (S3 API guide, "Transferring Payload in Multiple
Chunks" and "Including Trailing Headers"):

- STREAMING-AWS4-HMAC-SHA256-PAYLOAD: ``hex-size;chunk-signature=<sig>\\r\\n<data>\\r\\n`` ...
  then ``0;chunk-signature=<sig>\\r\\n\\r\\n``;
- STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: the same, but the 0-chunk is followed by trailer
  lines, the last being ``x-amz-trailer-signature:<sig>``, then an empty line;
- STREAMING-UNSIGNED-PAYLOAD-TRAILER (boto3 / aws-cli default over HTTPS): ``hex-size\\r\\n<data>
  \\r\\n`` ..., ``0\\r\\n``, trailer lines such as ``x-amz-checksum-crc32:<b64>``, an empty line.

Payload bytes are handed out as they arrive, so memory stays bounded whatever the chunk size;
a chunk's signature is checked when its last byte arrives, which is why callers must not commit
anything before ``finish()`` succeeds. Parsing is strict: CRLF line ends only, and the empty line
closing the trailer section is required (a body that stops right after the trailers is treated
as truncated) since the body length is known and every SDK sends it.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from gateway.s3.errors import (
    IncompleteBody,
    InvalidRequest,
    S3Error,
    SignatureDoesNotMatch,
)

MAX_CHUNK_HEADER = 4096  # bytes of one chunk-size line, CRLF included
MAX_TRAILER = 16384  # bytes of the whole trailer section

TRAILER_SIGNATURE = "x-amz-trailer-signature"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")

# Decoder states.
_HEADER = "chunk header"
_DATA = "chunk data"
_DATA_END = "chunk data end"
_TRAILER = "trailer"
_DONE = "done"


class ChunkSignatureVerifier:
    """Checks the chain of chunk signatures that starts at the request's own signature."""

    def __init__(self, signing_key: bytes, amz_date: str, scope: str, seed_signature: str) -> None:
        self._key = signing_key
        self._amz_date = amz_date
        self._scope = scope
        self._previous = seed_signature

    def verify_chunk(self, data_sha256_hex: str, signature: str) -> None:
        """Check one chunk's signature given the hex SHA-256 of its data; advance the chain."""
        self._check(
            "AWS4-HMAC-SHA256-PAYLOAD\n"
            f"{self._amz_date}\n{self._scope}\n{self._previous}\n"
            f"{_EMPTY_SHA256}\n{data_sha256_hex}",
            signature,
        )

    def verify_trailer(self, canonical_trailer: bytes, signature: str) -> None:
        """Check the trailer signature over the canonical ``name:value\\n`` trailer lines."""
        self._check(
            "AWS4-HMAC-SHA256-TRAILER\n"
            f"{self._amz_date}\n{self._scope}\n{self._previous}\n"
            f"{hashlib.sha256(canonical_trailer).hexdigest()}",
            signature,
        )

    def _check(self, string_to_sign: str, signature: str) -> None:
        expected = hmac.new(self._key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureDoesNotMatch(
                StringToSign=string_to_sign,
                SignatureProvided=signature,
                StringToSignBytes=string_to_sign.encode().hex(" "),
            )
        self._previous = expected


def canonical_trailer(trailers: dict[str, str]) -> bytes:
    """Trailer headers as signed: ``name:value\\n`` per header, sorted by (lower-case) name."""
    return "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers)).encode()


class AwsChunkedDecoder:
    """Feed raw body bytes, get payload bytes; ``finish()`` at end of input returns trailers.

    ``verifier`` is None for unsigned framing; ``expect_trailer`` says whether a trailer section
    follows the 0-chunk; ``decoded_length`` is x-amz-decoded-content-length when sent. After
    an error the decoder is in an undefined state and must be discarded with the request.
    """

    def __init__(
        self,
        *,
        verifier: ChunkSignatureVerifier | None,
        expect_trailer: bool,
        decoded_length: int | None,
    ) -> None:
        self._verifier = verifier
        self._expect_trailer = expect_trailer
        self._decoded_length = decoded_length
        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0  # bytes left in the current chunk's data
        self._crlf_seen = 0  # bytes of the CRLF after chunk data seen so far
        self._decoded = 0
        self._hasher = hashlib.sha256()
        self._chunk_signature = ""
        self._trailer_size = 0
        self._trailers: dict[str, str] = {}
        self._trailer_signed = False

    @property
    def done(self) -> bool:
        return self._state is _DONE

    def feed(self, data: bytes) -> list[bytes]:
        """Decode ``data``; return the payload pieces it completed (possibly none)."""
        pieces: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _DATA:
                take = min(self._remaining, end - pos)
                piece = data if take == end else data[pos : pos + take]
                if self._verifier is not None:
                    self._hasher.update(piece)
                pieces.append(piece)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._end_chunk_data()
            elif state is _DATA_END:
                if data[pos] != b"\r\n"[self._crlf_seen]:
                    raise _malformed("chunk data is not followed by CRLF")
                pos += 1
                self._crlf_seen += 1
                if self._crlf_seen == 2:
                    self._state = _HEADER
            elif state is _HEADER or state is _TRAILER:
                pos = self._read_line(data, pos)
            else:
                raise _malformed("data after the end of the body")
        return pieces

    def finish(self) -> dict[str, str]:
        """End of input: raise IncompleteBody unless the body was complete; return trailers.

        Trailers have lower-case names and never include x-amz-trailer-signature. Whether the
        ones announced in x-amz-trailer are present is for the caller to check.
        """
        if self._state is not _DONE:
            raise IncompleteBody("The request body terminated unexpectedly")
        return dict(self._trailers)

    # --- internals -----------------------------------------------------------------------

    def _read_line(self, data: bytes, pos: int) -> int:
        """Accumulate one CRLF-terminated line within its size budget; handle it once whole."""
        if self._state is _HEADER:
            budget = MAX_CHUNK_HEADER - len(self._line)
        else:
            budget = MAX_TRAILER - self._trailer_size - len(self._line)
        newline = data.find(b"\n", pos, pos + budget)
        stop = min(len(data), pos + budget) if newline < 0 else newline + 1
        self._line += data[pos:stop]
        if newline < 0:
            if stop - pos >= budget:
                raise _too_long(self._state)
            return stop
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r\n"):
            raise _malformed("line not terminated by CRLF")
        if self._state is _HEADER:
            self._on_chunk_header(line[:-2])
        else:
            self._trailer_size += len(line)
            self._on_trailer_line(line[:-2])
        return stop

    def _on_chunk_header(self, line: bytes) -> None:
        size_text, _, extensions = line.partition(b";")
        size_text = size_text.strip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise _malformed("invalid chunk size")
        size = int(size_text, 16)
        if self._verifier is not None:
            self._chunk_signature = _chunk_signature(extensions)
        if size == 0:
            if self._verifier is not None:
                self._verifier.verify_chunk(_EMPTY_SHA256, self._chunk_signature)
            if self._decoded_length is not None and self._decoded < self._decoded_length:
                raise IncompleteBody(
                    "The decoded body is shorter than x-amz-decoded-content-length: "
                    f"{self._decoded} of {self._decoded_length} bytes"
                )
            self._state = _TRAILER
            return
        if self._decoded_length is not None and self._decoded + size > self._decoded_length:
            raise InvalidRequest(
                "The decoded body is longer than x-amz-decoded-content-length "
                f"({self._decoded_length} bytes)"
            )
        self._decoded += size
        self._remaining = size
        self._hasher = hashlib.sha256()
        self._state = _DATA

    def _end_chunk_data(self) -> None:
        if self._verifier is not None:
            self._verifier.verify_chunk(self._hasher.hexdigest(), self._chunk_signature)
        self._crlf_seen = 0
        self._state = _DATA_END

    def _on_trailer_line(self, line: bytes) -> None:
        if not line:
            if self._expect_trailer and self._verifier is not None and not self._trailer_signed:
                raise _malformed(f"missing {TRAILER_SIGNATURE}")
            self._state = _DONE
            return
        if not self._expect_trailer:
            raise _malformed("trailer headers were not announced")
        if self._trailer_signed:
            raise _malformed(f"trailer header after {TRAILER_SIGNATURE}")
        raw_name, colon, raw_value = line.partition(b":")
        try:
            name = raw_name.strip(b" \t").decode("ascii").lower()
            value = raw_value.strip(b" \t").decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("non-ASCII trailer header") from None
        if not colon or not name:
            raise _malformed("invalid trailer header")
        if name == TRAILER_SIGNATURE:
            if self._verifier is not None:
                self._verifier.verify_trailer(canonical_trailer(self._trailers), value)
                self._trailer_signed = True
            return
        if name in self._trailers:
            raise _malformed(f"repeated trailer header {name}")
        self._trailers[name] = value


def _chunk_signature(extensions: bytes) -> str:
    for extension in extensions.split(b";"):
        key, _, value = extension.partition(b"=")
        if key.strip(b" \t") == b"chunk-signature":
            # latin-1 never fails; a non-hex value simply does not match.
            return value.strip(b" \t").decode("latin-1")
    raise _malformed("chunk without chunk-signature")


def _malformed(reason: str) -> S3Error:
    return InvalidRequest(f"Malformed aws-chunked body: {reason}")


def _too_long(state: str) -> S3Error:
    if state is _HEADER:
        return _malformed(f"chunk header longer than {MAX_CHUNK_HEADER} bytes")
    return _malformed(f"trailer section longer than {MAX_TRAILER} bytes")
