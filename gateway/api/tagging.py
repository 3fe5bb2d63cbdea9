"""Object tags: PutObjectTagging, GetObjectTagging, DeleteObjectTagging.

Tags live in the object's row (its metadata), so a write of the object replaces them and a
lifecycle rule or tool reads them with the object. Setting them needs a write grant on the
bucket, reading them a read grant: neither a public bucket, a bucket policy (which grants
s3:GetObject alone) nor a public-read ACL lets anyone else see them, as in S3, where
s3:GetObjectTagging is a permission of its own.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import auth
from gateway.api.acl import current_object
from gateway.api.common import read_small_body
from gateway.api.context import S3Request
from gateway.api.objects import object_key
from gateway.meta import object_rows
from gateway.meta.object_rows import ObjectRecord
from gateway.s3 import errors, tagging, xmlbody
from gateway.s3.xml import tagging as tagging_document


async def _tagged_object(req: S3Request, adopt: bool) -> ObjectRecord:
    _, record = await current_object(req, adopt=adopt)
    if record is None:
        raise errors.NoSuchKey(Key=object_key(req))
    return record


async def get_object_tagging(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_signed(req)
    assert req.credential is not None
    if not req.credential.can_read(req.bucket):
        raise errors.AccessDenied()
    record = await _tagged_object(req, adopt=True)
    body = tagging_document(record.metadata.tags)
    return web.Response(body=body, content_type="application/xml")


async def put_object_tagging(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    record = await _tagged_object(req, adopt=True)
    tags = tagging.validate(xmlbody.parse_tagging(await read_small_body(req)))
    if not await object_rows.set_tags(req.pool, record.bucket, record.key, tags):
        raise errors.NoSuchKey(Key=record.key)
    return web.Response()


async def delete_object_tagging(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    record = await _tagged_object(req, adopt=False)
    if not await object_rows.set_tags(req.pool, record.bucket, record.key, ()):
        raise errors.NoSuchKey(Key=record.key)
    return web.Response(status=204)
