"""Access control lists, reduced to what this gateway can honour: private, or readable by
everyone (AllUsers READ) on top of the owner's full control.

A bucket or object is owned by the gateway's one account; who else may do what is the YAML's
grants. So an ACL here says one thing, whether anonymous readers are let in, and anything
that would say more (another account, authenticated users, anonymous writes) is refused with
NotImplemented rather than stored and ignored.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from gateway.s3 import errors
from gateway.s3.xmlbody import Grant

PRIVATE = "private"
PUBLIC_READ = "public-read"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"

# Honoured as private: the bucket owner already has full control of every object here.
_PRIVATE_ALIASES = frozenset({PRIVATE, "bucket-owner-full-control"})
# Valid in S3, but granting what this gateway has no way to grant.
_UNSUPPORTED_CANNED = frozenset(
    {
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "bucket-owner-read",
        "log-delivery-write",
    }
)
GRANT_HEADERS = (
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-grant-full-control",
)
_PERMISSIONS = frozenset({"FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP"})


def acl_from_headers(headers: Mapping[str, str]) -> str | None:
    """The canned ACL a request's ``x-amz-acl`` or ``x-amz-grant-*`` headers ask for:
    PRIVATE or PUBLIC_READ; None when it names none."""
    canned = headers.get("x-amz-acl")
    grants = {name: headers[name] for name in GRANT_HEADERS if name in headers}
    if canned is not None and grants:
        raise errors.InvalidRequest("Specifying both Canned ACLs and Header Grants is not allowed")
    if canned is not None:
        return canned_acl(canned.strip())
    if not grants:
        return None
    if set(grants) == {"x-amz-grant-read"} and _grantees(grants["x-amz-grant-read"]) == [
        ("uri", ALL_USERS)
    ]:
        return PUBLIC_READ
    raise errors.NotImplemented(
        "This gateway honours only a grant of READ to AllUsers"
        f' (x-amz-grant-read: uri="{ALL_USERS}"); grants to other accounts or groups are'
        " not implemented.",
    )


def canned_acl(value: str) -> str:
    if value in _PRIVATE_ALIASES:
        return PRIVATE
    if value == PUBLIC_READ:
        return PUBLIC_READ
    if value in _UNSUPPORTED_CANNED:
        raise errors.NotImplemented(
            f"The canned ACL {value} is not implemented by this gateway; use private or"
            " public-read.",
        )
    raise errors.InvalidArgument(ArgumentName="x-amz-acl", ArgumentValue=value)


def _grantees(value: str) -> list[tuple[str, str]]:
    """``uri="...", id="..."`` as (type, value) pairs."""
    grantees = []
    for item in value.split(","):
        kind, _, grantee = item.strip().partition("=")
        grantees.append((kind.strip().lower(), grantee.strip().strip('"')))
    return grantees


def acl_from_grants(grants: list[Grant], owners: Collection[str]) -> str:
    """The canned ACL an AccessControlPolicy body amounts to.

    ``owners`` are the IDs that name the gateway's account (the owner the bucket reports, the
    requester's own); their FULL_CONTROL is implied, so listing it changes nothing.
    """
    public = False
    for grant in grants:
        if grant.permission not in _PERMISSIONS:
            raise errors.MalformedACLError()
        owner = grant.grantee_type == "CanonicalUser" and grant.grantee in owners
        everyone = grant.grantee_type == "Group" and grant.grantee == ALL_USERS
        if owner and grant.permission == "FULL_CONTROL":
            continue
        if everyone and grant.permission == "READ":
            public = True
            continue
        raise errors.NotImplemented(
            f"A grant of {grant.permission} to {grant.grantee} is not implemented by this"
            " gateway: it honours the owner's FULL_CONTROL and READ for AllUsers.",
        )
    return PUBLIC_READ if public else PRIVATE
