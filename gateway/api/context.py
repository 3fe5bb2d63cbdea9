"""What every operation handler is given: the app's resources and the parsed S3 request."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.config import CredentialConfig, GatewayConfig
from gateway.live import LiveConfig, Snapshot
from gateway.meta.buckets import Bucket, RecentBuckets
from gateway.meta.key_directory import KeyDirectory
from gateway.meta.object_rows import BatchedLookups
from gateway.objects.backend import ObjectBackend, Resources
from gateway.s3 import errors
from gateway.s3.query import Query
from gateway.s3.sigv4 import AuthRequest
from gateway.storage import BlobStore
from gateway.variants.eager import EagerRenderer
from gateway.variants.pool import RenderPool
from gateway.variants.service import VariantService

# The configuration the process started with: what cannot change without a restart is read
# here. Requests read the live one, through S3Request.config.
CONFIG = web.AppKey("config", GatewayConfig)
LIVE = web.AppKey("live", LiveConfig)
POOL = web.AppKey("pool", asyncpg.Pool)
LOOKUPS = web.AppKey("lookups", BatchedLookups)
STORES = web.AppKey("stores", Mapping[str, BlobStore])
BACKENDS = web.AppKey("backends", Mapping[str, ObjectBackend])
RESOURCES = web.AppKey("resources", Resources)
RECENT_BUCKETS = web.AppKey("recent_buckets", RecentBuckets)
# The access keys of the database (`gateway keys`), after the YAML's credentials.
KEY_DIRECTORY = web.AppKey("key_directory", KeyDirectory)
RENDER_POOL = web.AppKey("render_pool", RenderPool)
VARIANTS = web.AppKey("variants", VariantService)
EAGER = web.AppKey("eager", EagerRenderer)
SENDFILE_THREADS = web.AppKey("sendfile_threads", Executor)


@dataclass
class S3Request:
    """An HTTP request resolved to S3 terms: bucket, key, sub-resources, who is asking."""

    http: web.Request
    # The configuration as it was when the request arrived, kept to its end.
    snapshot: Snapshot
    bucket: str | None
    key: str | None
    raw_path: str
    raw_query: str
    query: Query
    # The request's headers, plus any a SigV2 presigned URL carried in its query.
    headers: CIMultiDictProxy[str]
    # Whether the bucket came from the Host header (virtual-host style).
    virtual_host: bool = False
    # None: anonymous.
    credential: CredentialConfig | None = None
    auth: AuthRequest | None = None
    signing_key: bytes | None = None
    # Filled in by handlers for logs.
    notes: dict[str, str] = field(default_factory=dict)
    # The bucket as the request's own lookup found it, for what the answer adds (CORS).
    found_bucket: Bucket | None = None
    # The storage profile of the bucket the request reached, for what the answer adds (SSE).
    profile: str | None = None
    # The MD5 of the client's own key (SSE-C) the object read or written is sealed with.
    customer_key_md5: str | None = None

    @property
    def app(self) -> web.Application:
        return self.http.app

    @property
    def config(self) -> GatewayConfig:
        return self.snapshot.config

    @property
    def pool(self) -> asyncpg.Pool:
        return self.http.app[POOL]

    def backend(self, profile: str) -> ObjectBackend:
        """The backend of a storage profile; an upload or object of a profile no longer
        configured is answered 503, not 500."""
        backend = self.http.app[BACKENDS].get(profile)
        if backend is None:
            raise errors.ServiceUnavailable(f"The storage profile {profile!r} is not configured.")
        return backend

    def eager_presets(self, bucket: str) -> list[str]:
        """The presets to render as soon as an object of ``bucket`` is written."""
        return [preset.name for preset in self.snapshot.presets.eager(bucket)]

    def eager_enqueued(self) -> None:
        """Jobs were committed: this process's eager renderer starts on them at once (the
        others find them when they next look)."""
        eager = self.http.app.get(EAGER)
        if eager is not None:
            eager.wake()

    @property
    def resource(self) -> str:
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}/{self.key}" if self.key is not None else f"/{self.bucket}"

    @property
    def owner_id(self) -> str:
        return self.credential.access_key if self.credential else "anonymous"


# The S3 request a web request was resolved to.
S3_REQUEST = web.RequestKey("s3_request", S3Request)


@dataclass(slots=True)
class RequestRecord:
    """What a request did, filled in as it goes and written once at its end, by the
    middleware, to the access log and the metrics."""

    # The S3 operation's name (GetObject, PutObject, ...); None until the request is routed.
    operation: str | None = None
    # The S3 error code of an error answer.
    error: str | None = None
    # Body bytes sent by a streamed response (a plain one's body is counted at the end).
    bytes_out: int = 0
    variant: str | None = None
    # hit (stored), render (made for this request), original (served in its place), error.
    variant_result: str | None = None
    render_ms: float | None = None


RECORD = web.RequestKey("record", RequestRecord)
