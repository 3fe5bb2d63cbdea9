import uuid

import pytest

from gateway.s3 import errors
from gateway.s3.versions import (
    NULL_REF,
    VersionRef,
    check_current,
    parse_version_id,
    version_id_text,
)

A_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_no_id_names_the_current_version() -> None:
    assert parse_version_id(None) is None


def test_null_names_the_null_version() -> None:
    assert parse_version_id("null") == NULL_REF
    assert NULL_REF.is_null


@pytest.mark.parametrize("version_id", [A_UUID, A_UUID.upper()])
def test_a_version_the_gateway_could_have_issued(version_id: str) -> None:
    assert parse_version_id(version_id) == VersionRef(uuid.UUID(A_UUID))


@pytest.mark.parametrize(
    "version_id",
    ["NULL", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", A_UUID + " ", "{" + A_UUID + "}",
     A_UUID.replace("-", ""), "urn:uuid:" + A_UUID],
)  # fmt: skip
def test_an_id_no_version_can_have(version_id: str) -> None:
    with pytest.raises(errors.InvalidArgument) as excinfo:
        parse_version_id(version_id, "x-amz-copy-source")
    assert excinfo.value.status == 400
    assert excinfo.value.message == "Invalid version id specified"
    assert excinfo.value.extra == {
        "ArgumentName": "x-amz-copy-source",
        "ArgumentValue": version_id,
    }


def test_the_empty_id() -> None:
    with pytest.raises(errors.InvalidArgument) as excinfo:
        parse_version_id("")
    assert excinfo.value.message == "Version id cannot be the empty string"
    assert excinfo.value.extra["ArgumentName"] == "versionId"


def test_ids_as_clients_see_them() -> None:
    version_id = uuid.UUID(A_UUID)
    assert version_id_text(version_id, null_version=True) == "null"
    assert version_id_text(version_id, null_version=False) == A_UUID


CURRENT = uuid.UUID(A_UUID)
OTHER = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("version_id", "current", "refused"),
    [
        (None, None, False),
        (None, (CURRENT, True), False),
        ("null", (CURRENT, True), False),
        # No object at all: NoSuchKey is the caller's answer.
        ("null", None, False),
        (A_UUID, (CURRENT, False), False),
        # A null version's row id is internal: it names nothing.
        (A_UUID, (CURRENT, True), True),
        ("null", (CURRENT, False), True),
        (OTHER, (CURRENT, False), True),
        (OTHER, None, True),
    ],
)
def test_operations_on_the_current_version_only(
    version_id: str | None, current: tuple[uuid.UUID, bool] | None, refused: bool
) -> None:
    if not refused:
        check_current(version_id, "k", current)
        return
    with pytest.raises(errors.NoSuchVersion) as excinfo:
        check_current(version_id, "k", current)
    assert excinfo.value.extra == {"Key": "k", "VersionId": version_id}
