"""S3 error codes: one small class per code, raised anywhere, rendered once by the middleware.

Codes, statuses and default messages follow the S3 API reference ("Error responses").
"""

from __future__ import annotations

from typing import ClassVar


class S3Error(Exception):
    """An error a client sees as an S3 XML error document."""

    code: ClassVar[str] = "InternalError"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "We encountered an internal error. Please try again."

    def __init__(self, message: str | None = None, **extra: str) -> None:
        self.message = message or self.default_message
        # Extra elements of the error document, e.g. BucketName, Key, StringToSign.
        self.extra = extra
        # Headers the raiser adds (x-amz-delete-marker on a 404 of a deleted key).
        self.added_headers: dict[str, str] = {}
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        """Response headers this error adds (e.g. Allow for 405)."""
        return dict(self.added_headers)


def _error(code: str, status: int, message: str) -> type[S3Error]:
    return type(code, (S3Error,), {"code": code, "status": status, "default_message": message})


# 400
BadDigest = _error(
    "BadDigest", 400, "The Content-MD5 you specified did not match what we received."
)
EntityTooSmall = _error(
    "EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed object size."
)
EntityTooLarge = _error(
    "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size."
)
IncompleteBody = _error(
    "IncompleteBody",
    400,
    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
)
InvalidArgument = _error("InvalidArgument", 400, "Invalid Argument")
InvalidBucketName = _error("InvalidBucketName", 400, "The specified bucket is not valid.")
InvalidDigest = _error("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
InvalidRequest = _error("InvalidRequest", 400, "Invalid Request")
InvalidTag = _error("InvalidTag", 400, "The tag provided was not a valid tag.")
MalformedACLError = _error(
    "MalformedACLError",
    400,
    "The XML you provided was not well-formed or did not validate against our published schema.",
)
InvalidPolicyDocument = _error(
    "InvalidPolicyDocument",
    400,
    "The content of the form does not meet the conditions specified in the policy document.",
)
MalformedPOSTRequest = _error(
    "MalformedPOSTRequest",
    400,
    "The body of your POST request is not well-formed multipart/form-data.",
)
MaxPostPreDataLengthExceeded = _error(
    "MaxPostPreDataLengthExceeded",
    400,
    "Your POST request fields preceding the upload file were too large.",
)
UnexpectedContent = _error("UnexpectedContent", 400, "This request does not support content")
MissingSecurityHeader = _error(
    "MissingSecurityHeader", 400, "Your request was missing a required header"
)
MalformedPolicy = _error("MalformedPolicy", 400, "Policies must be valid JSON.")
InvalidPart = _error(
    "InvalidPart",
    400,
    "One or more of the specified parts could not be found. The part may not have been "
    "uploaded, or the specified entity tag may not match the part's entity tag.",
)
InvalidPartOrder = _error(
    "InvalidPartOrder",
    400,
    "The list of parts was not in ascending order. Parts must be ordered by part number.",
)
KeyTooLongError = _error("KeyTooLongError", 400, "Your key is too long")
MalformedXML = _error(
    "MalformedXML",
    400,
    "The XML you provided was not well-formed or did not validate against our published schema",
)
MetadataTooLarge = _error(
    "MetadataTooLarge",
    400,
    "Your metadata headers exceed the maximum allowed metadata size.",
)
AuthorizationHeaderMalformed = _error(
    "AuthorizationHeaderMalformed", 400, "The authorization header is malformed."
)
AuthorizationQueryParametersError = _error(
    "AuthorizationQueryParametersError", 400, "Error parsing the X-Amz-Credential parameter."
)
XAmzContentSHA256Mismatch = _error(
    "XAmzContentSHA256Mismatch",
    400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.",
)
InvalidChunkSizeError = _error(
    "InvalidChunkSizeError",
    400,
    "Only the last chunk is allowed to have a size less than 8192 bytes",
)
InvalidURI = _error("InvalidURI", 400, "Couldn't parse the specified URI.")
InvalidLocationConstraint = _error(
    "InvalidLocationConstraint", 400, "The specified location-constraint is not valid."
)
RequestTimeout = _error(
    "RequestTimeout",
    400,
    "Your socket connection to the server was not read from or written to within the timeout "
    "period.",
)
MissingContentLength = _error(
    "MissingContentLength", 411, "You must provide the Content-Length HTTP header."
)
BucketAlreadyOwnedByYou = _error(
    "BucketAlreadyOwnedByYou",
    409,
    "Your previous request to create the named bucket succeeded and you already own it.",
)
BucketNotEmpty = _error("BucketNotEmpty", 409, "The bucket you tried to delete is not empty.")
OperationAborted = _error(
    "OperationAborted",
    409,
    "A conflicting conditional operation is currently in progress against this resource.",
)

BadRequest = _error("BadRequest", 400, "Bad Request")

# 403
AccessDenied = _error("AccessDenied", 403, "Access Denied")
# A CORS preflight that no rule allows.
AccessForbidden = _error("AccessForbidden", 403, "CORSResponse: This CORS request is not allowed.")
# Not an S3 code: what a write that would pass its bucket's quota gets (nothing is stored).
QuotaExceeded = _error("QuotaExceeded", 403, "The bucket's quota does not allow this write.")
InvalidAccessKeyId = _error(
    "InvalidAccessKeyId",
    403,
    "The AWS Access Key Id you provided does not exist in our records.",
)
SignatureDoesNotMatch = _error(
    "SignatureDoesNotMatch",
    403,
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.",
)
RequestTimeTooSkewed = _error(
    "RequestTimeTooSkewed",
    403,
    "The difference between the request time and the current time is too large.",
)

# 404
NoSuchBucket = _error("NoSuchBucket", 404, "The specified bucket does not exist")
NoSuchKey = _error("NoSuchKey", 404, "The specified key does not exist.")
NoSuchVersion = _error("NoSuchVersion", 404, "The specified version does not exist.")
NoSuchCORSConfiguration = _error(
    "NoSuchCORSConfiguration", 404, "The CORS configuration does not exist"
)
NoSuchWebsiteConfiguration = _error(
    "NoSuchWebsiteConfiguration", 404, "The specified bucket does not have a website configuration"
)
NoSuchLifecycleConfiguration = _error(
    "NoSuchLifecycleConfiguration", 404, "The lifecycle configuration does not exist"
)
NoSuchBucketPolicy = _error("NoSuchBucketPolicy", 404, "The bucket policy does not exist")
NoSuchUpload = _error(
    "NoSuchUpload",
    404,
    "The specified upload does not exist. The upload ID may be invalid, or the upload may "
    "have been aborted or completed.",
)

# 4xx others
PreconditionFailed = _error(
    "PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold"
)
InvalidRange = _error("InvalidRange", 416, "The requested range is not satisfiable")
InvalidPartNumber = _error("InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
NotModified = _error("NotModified", 304, "Not Modified")

# 5xx
InternalError = S3Error
NotImplemented = _error(
    "NotImplemented", 501, "A header you provided implies functionality that is not implemented."
)
SlowDown = _error("SlowDown", 503, "Please reduce your request rate.")


class MethodNotAllowed(S3Error):
    code = "MethodNotAllowed"
    status = 405
    default_message = "The specified method is not allowed against this resource."

    def __init__(self, allowed: str, message: str | None = None, **extra: str) -> None:
        super().__init__(message, **extra)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Allow": self.allowed}


class ServiceUnavailable(S3Error):
    """A dependency (the database, the upstream) cannot be used now; the client may retry."""

    code = "ServiceUnavailable"
    status = 503
    default_message = "Please reduce your request rate."
    # Seconds a client should wait before retrying (RFC 9110, section 10.2.3).
    retry_after: ClassVar[int] = 1

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
