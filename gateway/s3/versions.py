"""Version ids in requests and responses, and a bucket's versioning state.

A version S3 calls "null" (written while the bucket was unversioned or suspended) is addressed
as "null"; every other version by its id, the uuid of its row, which the gateway hands out in
x-amz-version-id and listings. The uuid of a null version is internal: it is never handed out,
so it addresses nothing. An id no version could have is 400 InvalidArgument, one that could
but does not exist 404 NoSuchVersion, as S3 answers.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from gateway.s3.errors import InvalidArgument, NoSuchVersion

NULL_VERSION = "null"
# A bucket's versioning state as GetBucketVersioning reports it; None: never enabled.
ENABLED = "Enabled"
SUSPENDED = "Suspended"
STATES = (ENABLED, SUSPENDED)

_WELL_FORMED = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


@dataclass(frozen=True)
class VersionRef:
    """A version a request names: the null version, or the one with ``version_id``."""

    version_id: uuid.UUID | None

    @property
    def is_null(self) -> bool:
        return self.version_id is None


NULL_REF = VersionRef(None)


def parse_version_id(version_id: str | None, argument: str = "versionId") -> VersionRef | None:
    """The version ``version_id`` names (None when not given: the current version).

    ``argument`` names where the id came from in an InvalidArgument (e.g. x-amz-copy-source).
    """
    if version_id is None:
        return None
    if version_id == NULL_VERSION:
        return NULL_REF
    if _WELL_FORMED.fullmatch(version_id):
        return VersionRef(uuid.UUID(version_id))
    message = (
        "Version id cannot be the empty string"
        if not version_id
        else "Invalid version id specified"
    )
    raise InvalidArgument(message, ArgumentName=argument, ArgumentValue=version_id)


def version_id_text(version_id: uuid.UUID, null_version: bool) -> str:
    """The id a client sees for a version."""
    return NULL_VERSION if null_version else str(version_id)


def keeps_versions(state: str | None) -> bool:
    """Whether a write keeps the version it replaces (S3: versioning enabled)."""
    return state == ENABLED


def check_current(version_id: str | None, key: str, current: tuple[uuid.UUID, bool] | None) -> None:
    """Raise unless ``version_id`` (None: not given) names the current version of ``key``
    (``current``: its id and whether it is the null version; None: there is none), for the
    operations served on the current version only (ACLs, tags)."""
    ref = parse_version_id(version_id)
    if ref is None:
        return
    if current is not None and (ref.is_null if current[1] else ref.version_id == current[0]):
        return
    if ref.is_null and current is None:
        # NoSuchKey, from the caller, as for an object never versioned.
        return
    raise NoSuchVersion(Key=key, VersionId=version_id or "")
