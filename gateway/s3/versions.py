"""Version ids in requests, while the gateway keeps no object versions.

Every bucket behaves as an unversioned S3 bucket does: its objects have the version id "null",
which addresses the current object. A request naming any other version is refused before it
reads, deletes or copies anything: an id the gateway could have issued (a UUID, as in the
objects table) is 404 NoSuchVersion, anything else 400 InvalidArgument, as S3 answers.

The current row's own version_id is not accepted either: it is an internal id the gateway never
returns (no x-amz-version-id header, no VersionId in any listing), so no client can hold it.
"""

from __future__ import annotations

import re

from gateway.s3.errors import InvalidArgument, NoSuchVersion

NULL_VERSION = "null"

_WELL_FORMED = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def check_version_id(version_id: str | None, key: str, argument: str = "versionId") -> None:
    """Raise unless ``version_id`` (None: not given) addresses the current object of ``key``.

    ``argument`` names where the id came from in an InvalidArgument (e.g. x-amz-copy-source).
    """
    if version_id is None or version_id == NULL_VERSION:
        return
    if _WELL_FORMED.fullmatch(version_id):
        raise NoSuchVersion(Key=key, VersionId=version_id)
    message = (
        "Version id cannot be the empty string"
        if not version_id
        else "Invalid version id specified"
    )
    raise InvalidArgument(message, ArgumentName=argument, ArgumentValue=version_id)
