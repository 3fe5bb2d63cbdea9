"""AWS Signature Version 4 verification for S3, header and presigned-URL forms.

Pure functions over a minimal view of the HTTP request, so the rules can be tested against
botocore's own signer without a server. References: the S3 API guide "Authenticating Requests
(AWS Signature Version 4)" (header, query-string and chunked variants).

Flow for the caller: ``parse_auth`` -> look up the access key and check the region ->
``check_time`` -> ``verify`` (returns the signing key, needed to verify aws-chunked bodies).
When ``parse_auth`` returns None the request may still be a SigV2 presigned URL: see ``sigv2``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

from gateway.s3.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidArgument,
    InvalidRequest,
    RequestTimeTooSkewed,
    S3Error,
    SignatureDoesNotMatch,
)
from gateway.s3.query import Query, parse_query

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
SERVICE = "s3"
MAX_PRESIGNED_EXPIRES = 604800  # one week, the S3 limit for X-Amz-Expires

# Values of x-amz-content-sha256 other than a hex SHA-256 of the body.
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
PAYLOAD_MARKERS = frozenset(
    {
        UNSIGNED_PAYLOAD,
        STREAMING_SIGNED,
        STREAMING_SIGNED_TRAILER,
        STREAMING_UNSIGNED_TRAILER,
    }
)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SCOPE_DATE = re.compile(r"\d{8}")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_INTEGER = re.compile(r"-?[0-9]{1,18}")  # not \d, which also matches non-ASCII digits
_HEADER_SPACE = re.compile(r"[ \t]+")
# Unreserved characters per RFC 3986; everything else is %XX in SigV4 canonical forms.
_UNRESERVED = "-_.~"
# Components already in canonical form need no decode/encode round trip (the common case).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-_.~/]*")
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9\-_.~]*")

_SIGV2_MESSAGE = (
    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
)
_CREDENTIAL_FORMAT = (
    'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)

# Builds the S3Error for a parse failure, so header and query auth share the parsers.
_ErrorFactory = Callable[[str], S3Error]

_HEADER_MALFORMED = "The authorization header is malformed; "
_QUERY_MALFORMED = "Error parsing the X-Amz-Credential parameter; "
_QUERY_REQUIRED = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
    "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)


@dataclass(frozen=True)
class HttpRequestView:
    """The parts of an HTTP request that SigV4 covers."""

    method: str
    raw_path: str  # as sent on the wire, percent-encoded, without the query
    raw_query: str  # as sent, without '?', may be ''
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ','
    # The query decoded once (pass the router's parse); signing reads only this, never the raw
    # text, so what is signed is what is routed.
    query: Query = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.query is None:
            object.__setattr__(self, "query", parse_query(self.raw_query))


@dataclass(frozen=True)
class AuthRequest:
    """What a signed request claims about itself, before any secret is involved."""

    access_key: str
    date: str  # YYYYMMDD from the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    request_time: datetime  # aware, UTC
    amz_date: str  # ISO-8601 basic (20130524T000000Z), as used in strings to sign
    payload_hash: str  # x-amz-content-sha256, or UNSIGNED-PAYLOAD for presigned URLs
    presigned: bool
    expires: int | None  # X-Amz-Expires (seconds), presigned only

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


# --- parsing ---------------------------------------------------------------------------------


def parse_auth(req: HttpRequestView) -> AuthRequest | None:
    """Parse the SigV4 claims of a request; None for an anonymous or SigV2 presigned request.

    SigV2 query auth (AWSAccessKeyId/Signature) is left to ``sigv2.parse_query_auth``. Raises an
    S3Error for a SigV2 Authorization header, for both auth mechanisms at once, and for
    malformed input.
    """
    params = req.query
    authorization = req.headers.get("authorization")
    presigned = "X-Amz-Algorithm" in params or "X-Amz-Signature" in params
    sigv2_query = "AWSAccessKeyId" in params or "Signature" in params
    if authorization is not None and (presigned or sigv2_query):
        raise InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            ArgumentName="Authorization",
            ArgumentValue=authorization,
        )
    if authorization is not None:
        return _parse_header_auth(req, authorization)
    if presigned:
        return _parse_query_auth(req, params)
    return None


def _parse_header_auth(req: HttpRequestView, authorization: str) -> AuthRequest:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm == "AWS":
        raise InvalidRequest(_SIGV2_MESSAGE)
    if algorithm != ALGORITHM:
        raise InvalidArgument(
            "Unsupported Authorization Type",
            ArgumentName="Authorization",
            ArgumentValue=authorization,
        )

    def malformed(reason: str) -> S3Error:
        return AuthorizationHeaderMalformed(_HEADER_MALFORMED + reason)

    three_components = malformed(
        "the authorization header requires three components: "
        "Credential, SignedHeaders, and Signature."
    )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in ("Credential", "SignedHeaders", "Signature") or key in fields:
            raise three_components
        fields[key] = value
    if len(fields) != 3:
        raise three_components
    access_key, date, region, service = _parse_credential(fields["Credential"], malformed)
    signed_headers = _parse_signed_headers(fields["SignedHeaders"], malformed)

    payload_hash = req.headers.get("x-amz-content-sha256")
    if payload_hash is None:
        raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
    _check_payload_hash(payload_hash)

    request_time, amz_date = _header_time(req.headers)
    if amz_date[:8] != date:
        raise malformed("Invalid credential date. Date is not the same as X-Amz-Date.")
    return AuthRequest(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=fields["Signature"],
        request_time=request_time,
        amz_date=amz_date,
        payload_hash=payload_hash,
        presigned=False,
        expires=None,
    )


def _parse_query_auth(req: HttpRequestView, params: Mapping[str, str]) -> AuthRequest:
    def error(message: str) -> S3Error:
        return AuthorizationQueryParametersError(message)

    algorithm = params.get("X-Amz-Algorithm")
    if algorithm is not None and algorithm != ALGORITHM:
        raise error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    required = (
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-Date",
        "X-Amz-SignedHeaders",
        "X-Amz-Expires",
    )
    if any(name not in params for name in required):
        raise error(_QUERY_REQUIRED)

    access_key, date, region, service = _parse_credential(
        params["X-Amz-Credential"], lambda reason: error(_QUERY_MALFORMED + reason)
    )
    signed_headers = _parse_signed_headers(
        params["X-Amz-SignedHeaders"],
        lambda reason: error("X-Amz-SignedHeaders " + reason),
    )

    amz_date = params["X-Amz-Date"]
    request_time = _parse_amz_date(amz_date)
    if request_time is None:
        raise error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if amz_date[:8] != date:
        raise error(
            f'Invalid credential date "{date}". This date is not the same as X-Amz-Date: '
            f'"{amz_date[:8]}".'
        )

    if not _INTEGER.fullmatch(params["X-Amz-Expires"]):
        raise error("X-Amz-Expires should be a number")
    expires = int(params["X-Amz-Expires"])
    # S3's words and order. Zero is well-formed: a URL valid for no time, which check_time
    # answers 403 "Request has expired" as S3 does.
    if expires < 0:
        raise error("X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGNED_EXPIRES:
        raise error(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given "
            f"X-Amz-Expires must be less than {MAX_PRESIGNED_EXPIRES} seconds"
        )

    # A presigned URL does not know the body; a client may still send the header and sign it.
    payload_hash = req.headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
    _check_payload_hash(payload_hash)
    return AuthRequest(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=params["X-Amz-Signature"],
        request_time=request_time,
        amz_date=amz_date,
        payload_hash=payload_hash,
        presigned=True,
        expires=expires,
    )


def _parse_credential(value: str, error: _ErrorFactory) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or not all(parts):
        raise error(_CREDENTIAL_FORMAT)
    access_key, date, region, service, terminator = parts
    if not _SCOPE_DATE.fullmatch(date):
        raise error(f'invalid date format "{date}"; expecting YYYYMMDD.')
    if service != SERVICE:
        raise error(f'incorrect service "{service}". This endpoint belongs to "{SERVICE}".')
    if terminator != TERMINATOR:
        raise error(f'incorrect terminal "{terminator}". This endpoint uses "{TERMINATOR}".')
    return access_key, date, region, service


def _parse_signed_headers(value: str, error: _ErrorFactory) -> tuple[str, ...]:
    # Canonical header names are lower-case; a compliant client lists them that way already.
    names = tuple(name.strip().lower() for name in value.split(";"))
    if not all(names):
        raise error("contains an empty header name.")
    if "host" not in names:
        raise error("must include the host header.")
    return names


def _check_payload_hash(value: str) -> None:
    if value not in PAYLOAD_MARKERS and not _SHA256_HEX.fullmatch(value):
        raise InvalidArgument(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
            "or a valid sha256 value.",
            ArgumentName="x-amz-content-sha256",
            ArgumentValue=value,
        )


def _header_time(headers: Mapping[str, str]) -> tuple[datetime, str]:
    """Request time from x-amz-date, else the Date header (which SigV4 then signs as ISO)."""
    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        parsed = _parse_amz_date(amz_date.strip())
        if parsed is not None:
            return parsed, amz_date.strip()
    elif (http_date := headers.get("date")) is not None:
        try:
            parsed = parsedate_to_datetime(http_date)
            # RFC 5322 "-0000" yields a naive datetime meaning UTC.
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            # Overflows for a date at the edge of the calendar (year 9999 at -1400).
            parsed = parsed.astimezone(UTC)
        except (TypeError, ValueError, OverflowError):
            parsed = None
        if parsed is not None:
            return parsed, _iso_basic(parsed)
    raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")


def _parse_amz_date(value: str) -> datetime | None:
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:
        # Sliced by hand: strptime is a tenth of the cost of verifying a request.
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        return None


# --- time --------------------------------------------------------------------------------------


def check_time(
    auth: AuthRequest, now: datetime, max_skew: timedelta = timedelta(minutes=15)
) -> None:
    """Reject requests signed too far from ``now`` (aware) and expired presigned URLs."""
    if auth.presigned:
        if auth.request_time - now > max_skew:
            raise _too_skewed(auth, now, max_skew)
        expires_at = auth.request_time + timedelta(seconds=auth.expires or 0)
        if now > expires_at:
            raise AccessDenied(
                "Request has expired",
                **{
                    "X-Amz-Expires": str(auth.expires),
                    "Expires": iso_extended(expires_at),
                    "ServerTime": iso_extended(now),
                },
            )
    elif abs(now - auth.request_time) > max_skew:
        raise _too_skewed(auth, now, max_skew)


def _too_skewed(auth: AuthRequest, now: datetime, max_skew: timedelta) -> S3Error:
    # S3 echoes the request's own timestamp and gives its clock in extended ISO-8601.
    return RequestTimeTooSkewed(
        RequestTime=auth.amz_date,
        ServerTime=iso_extended(now),
        MaxAllowedSkewMilliseconds=str(max_skew // timedelta(milliseconds=1)),
    )


def _iso_basic(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def iso_extended(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- signing -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC chain over date, region, service and the terminator."""
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    for part in (region, service, TERMINATOR):
        key = _hmac(key, part)
    return key


def canonical_uri(raw_path: str) -> str:
    """S3 canonical URI: decode once, encode once; no dot-segment or slash normalization."""
    if _PLAIN_PATH.fullmatch(raw_path):
        return raw_path
    return quote(unquote_to_bytes(_bytes(raw_path)), safe="/" + _UNRESERVED)


def canonical_query(query: Query, *, presigned: bool = False) -> str:
    """Parameters encoded with SigV4 rules and sorted; X-Amz-Signature left out if presigned.

    '+' is taken literally (not as a space): SigV4 clients percent-encode spaces as %20.
    """
    pairs = []
    for name, value in query.pairs:
        if presigned and name == "X-Amz-Signature":
            continue
        pairs.append((_encode_query(name), _encode_query(value or "")))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _encode_query(component: str) -> str:
    if _PLAIN_QUERY.fullmatch(component):
        return component
    return quote(_bytes(component), safe=_UNRESERVED)


def canonical_request(req: HttpRequestView, auth: AuthRequest) -> tuple[str, list[str]]:
    """The canonical request, and the signed headers absent from the request (signed as empty)."""
    header_lines = []
    missing = []
    for name in auth.signed_headers:
        value = req.headers.get(name)
        if value is None:
            missing.append(name)
            value = ""
        value = _HEADER_SPACE.sub(" ", value.strip(" \t"))
        header_lines.append(f"{name}:{value}\n")
    return (
        "\n".join(
            (
                req.method.upper(),
                canonical_uri(req.raw_path),
                canonical_query(req.query, presigned=auth.presigned),
                "".join(header_lines),
                ";".join(auth.signed_headers),
                auth.payload_hash,
            )
        ),
        missing,
    )


def string_to_sign(auth: AuthRequest, canonical: str) -> str:
    digest = hashlib.sha256(_bytes(canonical)).hexdigest()
    return f"{ALGORITHM}\n{auth.amz_date}\n{auth.scope}\n{digest}"


def verify(req: HttpRequestView, auth: AuthRequest, secret_key: str) -> bytes:
    """Check the request signature; return the signing key (needed for chunk signatures).

    A header listed in SignedHeaders but absent from the request is signed as empty for the
    error document, and always fails with SignatureDoesNotMatch.
    """
    canonical, missing = canonical_request(req, auth)
    to_sign = string_to_sign(auth, canonical)
    key = signing_key(secret_key, auth.date, auth.region, auth.service)
    expected = hmac.digest(key, _bytes(to_sign), "sha256").hex()
    if missing or not hmac.compare_digest(expected.encode("ascii"), _bytes(auth.signature)):
        canonical_bytes = _bytes(canonical)
        raise SignatureDoesNotMatch(
            AWSAccessKeyId=auth.access_key,
            StringToSign=to_sign,
            SignatureProvided=auth.signature,
            StringToSignBytes=_bytes(to_sign).hex(" "),
            CanonicalRequest=canonical,
            CanonicalRequestBytes=canonical_bytes.hex(" "),
        )
    return key


def unsigned_amz_headers(req: HttpRequestView, auth: AuthRequest) -> list[str]:
    """x-amz-* headers the signature does not cover (S3 refuses them: HeadersNotSigned).

    Without this check a captured or presigned request could be replayed with, say, an added
    x-amz-copy-source, turning a signed upload into a copy of any object the signer can read.
    x-amz-content-sha256 is exempt, as in S3: the payload hash is checked on its own.
    """
    signed = set(auth.signed_headers)
    return sorted(
        name
        for name in req.headers
        if name.startswith("x-amz-") and name != "x-amz-content-sha256" and name not in signed
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode("utf-8"), "sha256")


def _bytes(text: str) -> bytes:
    # Header values may carry undecodable bytes as surrogates; sign the bytes that were sent.
    return text.encode("utf-8", "surrogateescape")
