"""aws-chunked decoding: AWS's published signed example, botocore's encoder, and framing errors."""

from __future__ import annotations

import io
import random
from collections.abc import Iterable

import boto3
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, CrtCrc64NvmeChecksum

from gateway.s3 import checksums, errors, sigv4
from gateway.s3.chunked import MAX_CHUNK_HEADER, AwsChunkedDecoder, ChunkSignatureVerifier

AK = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"

# The S3 docs' chunked PUT example: 66560 bytes of 'a' in chunks of 65536, 1024 and 0.
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
CHUNK_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
# aws-c-auth's test vector extends the example with trailers first/second/third.
TRAILER_SIGNATURE = "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"
PAYLOAD = b"a" * 66560


def doc_chunks(payload: bytes = PAYLOAD) -> bytes:
    sizes = [65536, 1024]
    body = b""
    offset = 0
    for size, signature in zip(sizes, CHUNK_SIGNATURES, strict=False):
        data = payload[offset : offset + size]
        body += b"%x;chunk-signature=%s\r\n%s\r\n" % (size, signature.encode(), data)
        offset += size
    return body + b"0;chunk-signature=%s\r\n" % CHUNK_SIGNATURES[2].encode()


DOC_BODY = doc_chunks() + b"\r\n"


def doc_verifier() -> ChunkSignatureVerifier:
    key = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
    return ChunkSignatureVerifier(key, AMZ_DATE, SCOPE, SEED)


def signed_decoder(*, expect_trailer: bool = False, decoded_length: int | None = 66560):
    return AwsChunkedDecoder(
        verifier=doc_verifier(), expect_trailer=expect_trailer, decoded_length=decoded_length
    )


def decode(decoder: AwsChunkedDecoder, pieces: Iterable[bytes]) -> tuple[bytes, dict[str, str]]:
    out = bytearray()
    for piece in pieces:
        for decoded in decoder.feed(piece):
            out += decoded
    return bytes(out), decoder.finish()


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 9000)
        pieces.append(data[pos : pos + step])
        pos += step
    return pieces


# --- the AWS documentation example -----------------------------------------------------------


def test_doc_example_seed_request_and_body() -> None:
    req = sigv4.HttpRequestView(
        "PUT",
        "/examplebucket/chunkObject.txt",
        "",
        {
            "host": "s3.amazonaws.com",
            "x-amz-date": AMZ_DATE,
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560",
            "content-length": "66824",
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "authorization": (
                f"AWS4-HMAC-SHA256 Credential={AK}/{SCOPE},SignedHeaders=content-encoding;"
                "content-length;host;x-amz-content-sha256;x-amz-date;"
                f"x-amz-decoded-content-length;x-amz-storage-class,Signature={SEED}"
            ),
        },
    )
    assert len(DOC_BODY) == 66824
    auth = sigv4.parse_auth(req)
    assert auth is not None
    key = sigv4.verify(req, auth, SECRET)
    decoder = AwsChunkedDecoder(
        verifier=ChunkSignatureVerifier(key, auth.amz_date, auth.scope, auth.signature),
        expect_trailer=False,
        decoded_length=66560,
    )
    assert not decoder.done
    assert decode(decoder, [DOC_BODY]) == (PAYLOAD, {})
    assert decoder.done


@pytest.mark.parametrize("split", ["bytewise", "random-1", "random-2", "random-3"])
def test_doc_example_any_split(split: str) -> None:
    if split == "bytewise":
        pieces = [DOC_BODY[i : i + 1] for i in range(len(DOC_BODY))]
    else:
        pieces = split_randomly(DOC_BODY, int(split[-1]))
    assert decode(signed_decoder(), pieces) == (PAYLOAD, {})


def test_data_is_yielded_before_the_chunk_ends() -> None:
    decoder = signed_decoder()
    head = DOC_BODY[: DOC_BODY.index(b"\r\n") + 2]
    assert decoder.feed(head + b"a" * 1000) == [b"a" * 1000]
    assert decoder.feed(b"a" * 2000) == [b"a" * 2000]


def test_tampered_chunk_data() -> None:
    body = bytearray(DOC_BODY)
    body[65536 + 200] = ord("b")  # inside the 1024-byte chunk
    decoder = signed_decoder()
    decoder.feed(bytes(body[:65700]))  # first chunk is fine
    with pytest.raises(errors.SignatureDoesNotMatch) as caught:
        decoder.feed(bytes(body[65700:]))
    assert caught.value.extra["SignatureProvided"] == CHUNK_SIGNATURES[1]
    assert caught.value.extra["StringToSign"].startswith("AWS4-HMAC-SHA256-PAYLOAD\n")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_tampered_chunk_signature(index: int) -> None:
    body = DOC_BODY.replace(CHUNK_SIGNATURES[index].encode(), b"0" * 64)
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(signed_decoder(), [body])


def test_reordered_signature_chain_fails() -> None:
    # Same data and signature, but a wrong seed: the chain binds chunks to the request.
    key = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
    decoder = AwsChunkedDecoder(
        verifier=ChunkSignatureVerifier(key, AMZ_DATE, SCOPE, "f" * 64),
        expect_trailer=False,
        decoded_length=None,
    )
    with pytest.raises(errors.SignatureDoesNotMatch):
        decoder.feed(DOC_BODY)


@pytest.mark.parametrize(
    "cut",
    [0, 5, 50, 86, 87, 90, 40000, 65622, 65623, 65624, len(DOC_BODY) - 1],
)
def test_truncated_body(cut: int) -> None:
    decoder = signed_decoder()
    decoder.feed(DOC_BODY[:cut])
    with pytest.raises(errors.IncompleteBody):
        decoder.finish()


def test_signed_trailer_vector() -> None:
    trailer = (
        b"first:1st\r\nsecond:2nd\r\nthird:3rd\r\n"
        b"x-amz-trailer-signature:%s\r\n\r\n" % TRAILER_SIGNATURE.encode()
    )
    body = doc_chunks() + trailer
    payload, trailers = decode(signed_decoder(expect_trailer=True), [body])
    assert payload == PAYLOAD
    assert trailers == {"first": "1st", "second": "2nd", "third": "3rd"}

    bytewise = [body[i : i + 1] for i in range(len(body))]
    assert decode(signed_decoder(expect_trailer=True), bytewise)[1] == trailers

    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(signed_decoder(expect_trailer=True), [body.replace(b"2nd", b"2ND")])
    unsigned_trailer = doc_chunks() + b"first:1st\r\n\r\n"
    with pytest.raises(errors.InvalidRequest):
        decode(signed_decoder(expect_trailer=True), [unsigned_trailer])
    after_signature = body[:-2] + b"fourth:4th\r\n\r\n"
    with pytest.raises(errors.InvalidRequest):
        decode(signed_decoder(expect_trailer=True), [after_signature])


def test_signed_chunk_without_signature() -> None:
    with pytest.raises(errors.InvalidRequest):
        signed_decoder().feed(b"400\r\n")


# --- botocore's encoder (STREAMING-UNSIGNED-PAYLOAD-TRAILER) ---------------------------------


@pytest.mark.parametrize(
    ("size", "chunk_size"),
    [
        (0, None),
        (1, None),
        (100, 7),
        (100, 8192),
        (1024 * 1024, None),  # exactly one default (1 MiB) chunk
        (3 * 1024 * 1024 + 17, None),
        (100_000, 8192),
    ],
)
def test_botocore_aws_chunked_wrapper(size: int, chunk_size: int | None) -> None:
    payload = random.Random(size).randbytes(size)
    body = AwsChunkedWrapper(
        io.BytesIO(payload),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=chunk_size,
    ).read()
    decoder = AwsChunkedDecoder(verifier=None, expect_trailer=True, decoded_length=size)
    decoded, trailers = decode(decoder, split_randomly(body, size))
    assert decoded == payload
    crc = checksums.new_checksum("CRC32")
    crc.update(decoded)
    assert trailers == {"x-amz-checksum-crc32": crc.digest_b64()}


def test_boto3_put_object_body() -> None:
    """What boto3 really sends for put_object over HTTPS decodes to the object."""
    client = boto3.client(
        "s3",
        endpoint_url="https://s3.example.com",
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SECRET,
        config=Config(
            s3={"addressing_style": "path"}, request_checksum_calculation="when_supported"
        ),
    )
    captured: list[AWSRequest] = []

    class Sent(Exception):
        pass

    def capture(request: AWSRequest, **_: object) -> None:
        captured.append(request)
        raise Sent

    client.meta.events.register("before-send.s3", capture)
    payload = random.Random(1).randbytes(2 * 1024 * 1024 + 5)
    with pytest.raises(Sent):
        client.put_object(
            Bucket="b", Key="k", Body=io.BytesIO(payload), ChecksumAlgorithm="CRC64NVME"
        )
    (request,) = captured
    assert request.headers["x-amz-content-sha256"] == b"STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert request.headers["x-amz-trailer"] == b"x-amz-checksum-crc64nvme"
    decoded_length = int(request.headers["x-amz-decoded-content-length"])
    body = request.body.read()
    decoder = AwsChunkedDecoder(verifier=None, expect_trailer=True, decoded_length=decoded_length)
    decoded, trailers = decode(decoder, split_randomly(body, 5))
    assert decoded == payload
    expected = CrtCrc64NvmeChecksum()
    expected.update(payload)
    assert trailers == {"x-amz-checksum-crc64nvme": expected.b64digest()}


# --- framing rules ---------------------------------------------------------------------------


def unsigned(
    *, expect_trailer: bool = True, decoded_length: int | None = None
) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(
        verifier=None, expect_trailer=expect_trailer, decoded_length=decoded_length
    )


def test_unsigned_extensions_and_trailer_whitespace() -> None:
    body = b"5;ext=1;other\r\nhello\r\n0\r\nx-amz-checksum-crc32 :  NhCmhg== \r\n\r\n"
    assert decode(unsigned(decoded_length=5), [body]) == (
        b"hello",
        {"x-amz-checksum-crc32": "NhCmhg=="},
    )


def test_unsigned_without_trailer() -> None:
    assert decode(unsigned(expect_trailer=False), [b"3\r\nabc\r\n0\r\n\r\n"]) == (b"abc", {})
    with pytest.raises(errors.InvalidRequest):
        unsigned(expect_trailer=False).feed(b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n")


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n",  # not hex
        b"-1\r\n",
        b"\r\n",  # empty size
        b"3\nabc\r\n",  # bare LF
        b"3\r\nabcX\r\n",  # data not followed by CRLF
        b"11111111111111111\r\n",  # more than 16 hex digits
        b"0\r\nno-colon\r\n\r\n",
        b"0\r\n:value\r\n\r\n",
        b"0\r\na:1\r\na:2\r\n\r\n",  # repeated trailer
        b"0\r\nx:\xff\r\n\r\n",
        b"0\r\n\r\nextra",  # data after the end
    ],
)
def test_malformed_framing(body: bytes) -> None:
    with pytest.raises(errors.InvalidRequest):
        unsigned().feed(body)


def test_missing_final_empty_line_is_incomplete() -> None:
    decoder = unsigned()
    decoder.feed(b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n")
    with pytest.raises(errors.IncompleteBody):
        decoder.finish()


def test_header_line_limit() -> None:
    decoder = unsigned()
    decoder.feed(b"3;" + b"x" * (MAX_CHUNK_HEADER - 10))
    with pytest.raises(errors.InvalidRequest):
        decoder.feed(b"x" * 100)
    # A header line right at the limit is fine.
    line = b"3;" + b"x" * (MAX_CHUNK_HEADER - 4) + b"\r\n"
    assert decode(unsigned(expect_trailer=False), [line + b"abc\r\n0\r\n\r\n"])[0] == b"abc"


def test_trailer_size_limit() -> None:
    decoder = unsigned()
    decoder.feed(b"0\r\n")
    with pytest.raises(errors.InvalidRequest):
        for index in range(1000):
            decoder.feed(b"x-amz-meta-%d:%s\r\n" % (index, b"v" * 100))


def test_decoded_length_mismatch() -> None:
    with pytest.raises(errors.IncompleteBody):
        unsigned(decoded_length=4).feed(b"3\r\nabc\r\n0\r\n")
    too_long = unsigned(decoded_length=2)
    with pytest.raises(errors.InvalidRequest):
        too_long.feed(b"3\r\n")
