import pytest

from gateway.s3 import errors
from gateway.s3.versions import check_version_id

A_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize("version_id", [None, "null"])
def test_the_current_object(version_id: str | None) -> None:
    check_version_id(version_id, "k")


@pytest.mark.parametrize("version_id", [A_UUID, A_UUID.upper()])
def test_a_version_the_gateway_could_have_issued(version_id: str) -> None:
    with pytest.raises(errors.NoSuchVersion) as excinfo:
        check_version_id(version_id, "k")
    assert excinfo.value.status == 404
    assert excinfo.value.extra == {"Key": "k", "VersionId": version_id}


@pytest.mark.parametrize(
    "version_id",
    ["NULL", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", A_UUID + " ", "{" + A_UUID + "}",
     A_UUID.replace("-", ""), "urn:uuid:" + A_UUID],
)  # fmt: skip
def test_an_id_no_version_can_have(version_id: str) -> None:
    with pytest.raises(errors.InvalidArgument) as excinfo:
        check_version_id(version_id, "k", "x-amz-copy-source")
    assert excinfo.value.status == 400
    assert excinfo.value.message == "Invalid version id specified"
    assert excinfo.value.extra == {
        "ArgumentName": "x-amz-copy-source",
        "ArgumentValue": version_id,
    }


def test_the_empty_id() -> None:
    with pytest.raises(errors.InvalidArgument) as excinfo:
        check_version_id("", "k")
    assert excinfo.value.message == "Version id cannot be the empty string"
    assert excinfo.value.extra["ArgumentName"] == "versionId"
