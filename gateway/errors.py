"""The gateway's own exceptions: raised below ``api/`` (meta, storage, objects) and turned into
S3 errors only by the API layer (gateway.api.middleware)."""

from __future__ import annotations


class GatewayError(Exception):
    """A failure the API layer answers with an S3 error of its choosing."""


class BucketGoneError(GatewayError):
    """The bucket a write commits into was deleted meanwhile (nothing was committed)."""

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket)
        self.bucket = bucket


class UploadGoneError(GatewayError):
    """The multipart upload was completed or aborted meanwhile."""

    def __init__(self, upload_id: str = "") -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id


class QuotaExceededError(GatewayError):
    """A write would take its bucket past a limit of its quota (nothing was committed)."""

    def __init__(self, bucket: str, limit: str, value: int) -> None:
        super().__init__(bucket, limit, value)
        self.bucket = bucket
        # max_bytes or max_objects, and its value.
        self.limit = limit
        self.value = value


class ObjectChangedError(GatewayError):
    """The object was replaced while it was being read: the client should try again."""


class StoredObjectChangedError(ObjectChangedError):
    """Storage does not hold the recorded version of an object any more: another tool
    replaced or deleted it there (upstream profiles)."""


class UpstreamUnavailableError(GatewayError):
    """The upstream storage could not complete a call, even after retries."""


class UpstreamThrottledError(UpstreamUnavailableError):
    """The upstream storage asks to reduce the request rate."""


class UpstreamRefusedError(GatewayError):
    """The upstream refused a request for a reason that is the client's to fix (its S3 error
    code is kept, e.g. InvalidPart or EntityTooSmall)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class KeyNotStorableError(GatewayError):
    """An object key the bucket's storage cannot hold (too long once prefixed upstream,
    reserved, or with path segments an upstream could normalise away)."""

    def __init__(self, key: str, message: str, max_size: int | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        # Set when the key is too long: the largest size (in bytes) a key may have there.
        self.max_size = max_size


class StoredDataCorruptError(GatewayError):
    """Stored bytes failed their integrity check (an encrypted blob that does not open): the
    read stops rather than yield bytes the gateway did not write."""
