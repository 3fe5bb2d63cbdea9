-- The gateway's metadata schema. Applied by `gateway migrate` and at start-up under an advisory
-- lock; every statement is idempotent, and the version applied is recorded in schema_version.
-- schema-version: 19

CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS buckets (
    name        text COLLATE "C" PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    profile     text NOT NULL,
    public_read boolean NOT NULL DEFAULT false,
    owner       text NOT NULL,
    -- quotas, CORS, allowed variant presets
    settings    jsonb NOT NULL DEFAULT '{}'
);

-- One row per live object; a write replaces the row (new version_id, new storage_key) in one
-- transaction, so readers see the old object or the new one, never a mix. A completed multipart
-- upload has no storage_key of its own: its bytes are its part blobs, listed in object_chunks.
CREATE TABLE IF NOT EXISTS objects (
    bucket        text COLLATE "C" NOT NULL REFERENCES buckets (name),
    -- "C" collation: S3 lists keys in UTF-8 byte order
    key           text COLLATE "C" NOT NULL,
    version_id    uuid NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    etag          text NOT NULL,
    content_type  text NOT NULL,
    -- {"user": {x-amz-meta-*}, "headers": {cache-control, ...}, "checksums": {"CRC32": ...}}
    metadata      jsonb NOT NULL DEFAULT '{}',
    profile       text NOT NULL,
    -- NULL for a multipart object (see object_chunks)
    storage_key   text,
    last_modified timestamptz NOT NULL,
    PRIMARY KEY (bucket, key)
);
-- Version 2 (multipart objects): brings a version-1 database up to date; no-ops on a new one.
ALTER TABLE objects ALTER COLUMN storage_key DROP NOT NULL;
-- How many parts a multipart object was completed from; NULL for a single-part object.
ALTER TABLE objects ADD COLUMN IF NOT EXISTS parts_count integer;

-- The bytes of a multipart object, in order: completing an upload moves its parts here without
-- copying a byte. start_offset is where the part begins in the object, so a Range read finds
-- its parts by index. Rows go with their object's version, in the transaction that replaces or
-- deletes it, which also lists their blobs in garbage.
CREATE TABLE IF NOT EXISTS object_chunks (
    version_id   uuid NOT NULL,
    part_number  integer NOT NULL,
    start_offset bigint NOT NULL CHECK (start_offset >= 0),
    size         bigint NOT NULL CHECK (size >= 0),
    profile      text NOT NULL,
    storage_key  text NOT NULL,
    etag         text NOT NULL,
    checksums    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (version_id, part_number)
);

CREATE TABLE IF NOT EXISTS uploads (
    upload_id  uuid PRIMARY KEY,
    bucket     text COLLATE "C" NOT NULL REFERENCES buckets (name),
    key        text COLLATE "C" NOT NULL,
    initiated  timestamptz NOT NULL DEFAULT now(),
    content_type text NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}',
    checksum_algorithm text
);
-- Version 2. Upload ids are time-ordered (UUIDv7), so (key, upload_id) is both the order in
-- which ListMultipartUploads pages and initiation order within a key.
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS checksum_type text;
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS owner text;
DROP INDEX IF EXISTS uploads_by_key;
CREATE INDEX IF NOT EXISTS uploads_by_key_id ON uploads (bucket, key, upload_id);
-- The janitor aborts uploads abandoned for longer than limits.abandoned_upload_seconds.
CREATE INDEX IF NOT EXISTS uploads_by_age ON uploads (initiated);

CREATE TABLE IF NOT EXISTS upload_parts (
    upload_id   uuid NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    part_number integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    size        bigint NOT NULL,
    etag        text NOT NULL,
    checksums   jsonb NOT NULL DEFAULT '{}',
    profile     text NOT NULL,
    storage_key text NOT NULL,
    last_modified timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, part_number)
);

CREATE TABLE IF NOT EXISTS derivatives (
    version_id    uuid NOT NULL,
    variant_key   text NOT NULL,
    status        text NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    profile       text,
    storage_key   text,
    size          bigint,
    etag          text,
    content_type  text,
    error         text,
    attempts      integer NOT NULL DEFAULT 0,
    next_retry_at timestamptz,
    PRIMARY KEY (version_id, variant_key)
);
-- Version 3. When a derivative became ready: its Last-Modified.
ALTER TABLE derivatives ADD COLUMN IF NOT EXISTS rendered_at timestamptz;

-- Version 3. Eager variants to render, inserted with the object version they are made of. A
-- gateway leases a job (attempts + 1, run_after moved past the lease) with FOR UPDATE SKIP
-- LOCKED and deletes it when done; a job whose version was replaced meanwhile is dropped.
CREATE TABLE IF NOT EXISTS variant_jobs (
    version_id uuid NOT NULL,
    preset     text NOT NULL,
    bucket     text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    run_after  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version_id, preset)
);
CREATE INDEX IF NOT EXISTS variant_jobs_by_time ON variant_jobs (run_after);

-- The intent log. A blob's key is recorded here before the blob is written and removed in the
-- transaction that commits the row referencing it; a row that stops referencing a blob inserts
-- its key in that same transaction. The janitor deletes listed blobs after a grace period, so a
-- crash can never orphan a blob and nothing ever lists storage to find garbage.
CREATE TABLE IF NOT EXISTS garbage (
    profile     text NOT NULL,
    storage_key text NOT NULL,
    listed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile, storage_key)
);
CREATE INDEX IF NOT EXISTS garbage_by_age ON garbage (listed_at);
-- Version 8. The janitor deletes a blob before its entry, so a crash in between leaves an entry
-- whose blob may be gone (deleting it again is harmless), never a blob that nothing lists. An
-- entry it has started on is marked collecting: from then on no write may claim it (a write that
-- outlived the grace period fails instead of committing a row whose blob is being deleted) and
-- no renewal revives it. (Added here, before the functions below that read it.)
ALTER TABLE garbage ADD COLUMN IF NOT EXISTS collecting boolean NOT NULL DEFAULT false;

-- Version 4 (upstream storage). An upstream profile keeps objects in place, 1:1 under their own
-- keys: storage_etag is the upstream's ETag of the object (or part) a row describes, so a read
-- can insist on exactly that version. A row with a storage_etag names an upstream object, not a
-- generated blob: it is never listed as garbage (deleting it is the DeleteObject itself).
ALTER TABLE objects ADD COLUMN IF NOT EXISTS storage_etag text;
ALTER TABLE object_chunks ADD COLUMN IF NOT EXISTS storage_etag text;
ALTER TABLE upload_parts ADD COLUMN IF NOT EXISTS storage_etag text;
-- The upstream multipart upload a gateway upload maps onto, and the upstream key it completes.
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS profile text;
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS storage_key text;
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS storage_upload_id text;

-- Version 5. `gateway import BUCKET` records the objects already in an upstream prefix; its
-- checkpoint (the last key recorded) lets an interrupted import resume where it stopped.
CREATE TABLE IF NOT EXISTS imports (
    bucket      text COLLATE "C" PRIMARY KEY REFERENCES buckets (name) ON DELETE CASCADE,
    last_key    text COLLATE "C" NOT NULL DEFAULT '',
    imported    bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- Version 6. The row swap as server-side functions, so an unconditional write commits in one
-- round trip (and a conditional one in three) instead of one per statement.

-- Retire an object version no row describes any more: its derivatives and chunks go, and every
-- blob of theirs and its own enters the garbage log (but not an upstream object kept in place
-- under its own key: that key is the live object's, or deleted by the caller). Call in the
-- transaction that replaces or deletes the version: it holds the object row's lock, which
-- marking a derivative ready share-locks, so none can become ready afterwards. (PL/pgSQL, not
-- SQL: its plans are cached per connection instead of made on every call.)
CREATE OR REPLACE FUNCTION gateway_retire(
    p_version uuid, p_profile text, p_storage_key text, p_storage_etag text,
    p_parts_count integer
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        DELETE FROM derivatives WHERE version_id = p_version RETURNING profile, storage_key
    )
    INSERT INTO garbage (profile, storage_key)
    SELECT profile, storage_key FROM gone WHERE storage_key IS NOT NULL
    UNION ALL
    SELECT p_profile, p_storage_key WHERE p_storage_key IS NOT NULL AND p_storage_etag IS NULL
    ON CONFLICT DO NOTHING;
    IF p_parts_count IS NOT NULL THEN
        WITH gone AS (
            DELETE FROM object_chunks WHERE version_id = p_version
            RETURNING profile, storage_key, storage_etag
        )
        INSERT INTO garbage (profile, storage_key)
        SELECT profile, storage_key FROM gone WHERE storage_etag IS NULL
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- Swap in an object row: claim its blob from the garbage log ('lost' if the entry is gone),
-- lock the key (first writes of a key have no row to lock), replace the row, check the quota of
-- the bucket it grows (Version 13; p_quota false for a row recording what storage already
-- holds, which no refusal could undo), enqueue its eager variants and retire the version it
-- replaces. 'ok' when done.
DROP FUNCTION IF EXISTS gateway_swap_object(
    text, text, uuid, bigint, text, text, text, text, timestamptz, jsonb, integer, text, text[]
);
-- Version 13 added p_quota.
DROP FUNCTION IF EXISTS gateway_swap_object(
    text, text, uuid, bigint, text, text, text, text, timestamptz, jsonb, integer, text, bytea,
    text[]
);
-- Version 14 added p_null_version: a version S3 calls "null" replaces the key's null version
-- (retired) and keeps the others; any other version keeps the one it replaces, non-current.
DROP FUNCTION IF EXISTS gateway_swap_object(
    text, text, uuid, bigint, text, text, text, text, timestamptz, jsonb, integer, text, bytea,
    text[], boolean
);
CREATE OR REPLACE FUNCTION gateway_swap_object(
    p_bucket text, p_key text, p_version uuid, p_size bigint, p_etag text,
    p_content_type text, p_profile text, p_storage_key text, p_last_modified timestamptz,
    p_metadata jsonb, p_parts_count integer, p_storage_etag text, p_inline_data bytea,
    p_eager text[], p_quota boolean, p_null_version boolean
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    old objects%ROWTYPE;
    -- What the write stops counting: the versions it retires.
    freed_objects bigint := 0;
    freed_bytes bigint := 0;
    keep boolean;
BEGIN
    IF p_storage_key IS NOT NULL AND p_storage_etag IS NULL THEN
        DELETE FROM garbage
        WHERE profile = p_profile AND storage_key = p_storage_key AND NOT collecting;
        IF NOT FOUND THEN
            RETURN 'lost';
        END IF;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(p_bucket || '/' || p_key, 0));
    SELECT * INTO old FROM objects WHERE bucket = p_bucket AND key = p_key FOR UPDATE;
    keep := old.version_id IS NOT NULL AND NOT (p_null_version AND old.null_version);
    IF keep THEN
        PERFORM gateway_keep_version(old);
    ELSIF old.version_id IS NOT NULL THEN
        freed_objects := 1;
        freed_bytes := old.size;
    END IF;
    IF p_null_version THEN
        -- An index probe that finds nothing on a bucket never versioned.
        SELECT freed_objects + d.objects, freed_bytes + d.bytes INTO freed_objects, freed_bytes
        FROM gateway_drop_null_version(p_bucket, p_key) d;
    END IF;
    INSERT INTO objects (bucket, key, version_id, size, etag, content_type, profile, storage_key,
                         last_modified, metadata, parts_count, storage_etag, inline_data,
                         null_version)
    VALUES (p_bucket, p_key, p_version, p_size, p_etag, p_content_type, p_profile, p_storage_key,
            p_last_modified, p_metadata, p_parts_count, p_storage_etag, p_inline_data,
            p_null_version)
    ON CONFLICT (bucket, key) DO UPDATE SET version_id = EXCLUDED.version_id,
        size = EXCLUDED.size, etag = EXCLUDED.etag, content_type = EXCLUDED.content_type,
        profile = EXCLUDED.profile, storage_key = EXCLUDED.storage_key,
        last_modified = EXCLUDED.last_modified, metadata = EXCLUDED.metadata,
        parts_count = EXCLUDED.parts_count, storage_etag = EXCLUDED.storage_etag,
        inline_data = EXCLUDED.inline_data, null_version = EXCLUDED.null_version;
    IF p_quota THEN
        PERFORM gateway_check_quota(p_bucket, 1 - freed_objects, p_size - freed_bytes);
    END IF;
    IF cardinality(p_eager) > 0 THEN
        INSERT INTO variant_jobs (bucket, key, version_id, preset)
        SELECT p_bucket, p_key, p_version, unnest(p_eager) ON CONFLICT DO NOTHING;
    END IF;
    IF old.version_id IS NOT NULL AND NOT keep THEN
        PERFORM gateway_retire(
            old.version_id, old.profile, old.storage_key, old.storage_etag, old.parts_count
        );
    END IF;
    RETURN 'ok';
END
$$;

-- Delete an object row and retire its version; false if there was none. Version 18: with
-- p_version, only while that version is the current one (a lifecycle rule found it expired:
-- a write since then wins, and so does versioning enabled since: the version is then kept behind
-- a delete marker by a later pass); the two-argument form is kept for earlier gateways.
CREATE OR REPLACE FUNCTION gateway_delete_object(p_bucket text, p_key text, p_version uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    old objects%ROWTYPE;
BEGIN
    DELETE FROM objects WHERE bucket = p_bucket AND key = p_key
        AND (p_version IS NULL OR version_id = p_version AND NOT EXISTS (
            SELECT 1 FROM buckets WHERE name = p_bucket AND settings ? 'versioning'))
    RETURNING * INTO old;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM gateway_retire(
        old.version_id, old.profile, old.storage_key, old.storage_etag, old.parts_count
    );
    RETURN true;
END
$$;
CREATE OR REPLACE FUNCTION gateway_delete_object(p_bucket text, p_key text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RETURN gateway_delete_object(p_bucket, p_key, NULL::uuid);
END
$$;

-- Version 7. A small object (limits.inline_max_size) keeps its bytes in its row: its write is one
-- transaction made durable by Postgres's own fsync, with no blob file, and its read needs no
-- file. Such a row has neither storage_key nor parts_count, so retiring it lists nothing.
ALTER TABLE objects ADD COLUMN IF NOT EXISTS inline_data bytea;

-- Version 9 (encrypted profiles). The data key of each blob of an encrypted profile, wrapped by
-- the profile's master key key_id; size is the blob's plaintext size. Recorded once the blob is
-- durable, before a row claims it, and deleted with the blob's intent-log entry once the blob is
-- gone, so a key never outlives its blob for long and a blob never loses its key. Rotation
-- rewrites key_id and wrapped_key, never the blob. A blob without a row here was written before
-- its profile was encrypted: it is read as it is.
CREATE TABLE IF NOT EXISTS blob_keys (
    profile     text NOT NULL,
    storage_key text NOT NULL,
    key_id      text NOT NULL,
    wrapped_key bytea NOT NULL,
    size        bigint NOT NULL CHECK (size >= 0),
    PRIMARY KEY (profile, storage_key)
);
-- Rotation finds the keys still wrapped by a retired master key.
CREATE INDEX IF NOT EXISTS blob_keys_by_master ON blob_keys (profile, key_id, storage_key);

-- Version 9 (chunked profiles). A chunked profile keeps each blob as fixed-size chunks, every
-- chunk a blob of the store it wraps (gateway.storage.chunked). The header row, written as the
-- blob commits, tells a chunked blob (an empty one too) from a blob written before its profile
-- was chunked, which has none and is read and deleted as it is.
CREATE TABLE IF NOT EXISTS chunked_blobs (
    profile  text NOT NULL,
    blob_key text NOT NULL,
    size     bigint NOT NULL CHECK (size >= 0),
    PRIMARY KEY (profile, blob_key)
);
-- A blob's chunks in order, recorded one by one as they are stored (each claiming its chunk's
-- garbage entry), so deleting the blob finds every chunk of a write cut short. A chunk with a
-- chunk_hash is shared through chunk_blobs; one without is this row's alone. start_offset
-- finds the chunks of a Range read by index.
CREATE TABLE IF NOT EXISTS blob_chunks (
    profile      text NOT NULL,
    blob_key     text NOT NULL,
    seq          integer NOT NULL CHECK (seq >= 0),
    start_offset bigint NOT NULL CHECK (start_offset >= 0),
    size         bigint NOT NULL CHECK (size > 0),
    chunk_key    text NOT NULL,
    chunk_hash   bytea,
    PRIMARY KEY (profile, blob_key, seq)
);
CREATE INDEX IF NOT EXISTS blob_chunks_by_offset ON blob_chunks (profile, blob_key, start_offset);
-- Deduplicated chunks by a keyed hash of their bytes, with the number of blob_chunks rows that
-- use each. A row is inserted unstored, with its key listed in garbage, before its chunk is
-- written; the write marks it stored in the transaction that claims the entry. Its key is
-- listed again when refs drop to zero, as the row is deleted. An unstored row left by a crash
-- goes when the janitor collects its key (found through the partial index).
CREATE TABLE IF NOT EXISTS chunk_blobs (
    profile     text NOT NULL,
    chunk_hash  bytea NOT NULL,
    storage_key text NOT NULL,
    size        bigint NOT NULL CHECK (size > 0),
    refs        bigint NOT NULL DEFAULT 0 CHECK (refs >= 0),
    stored      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (profile, chunk_hash)
);
CREATE INDEX IF NOT EXISTS chunk_blobs_unstored ON chunk_blobs (profile, storage_key)
    WHERE NOT stored;
-- Secrets a profile generates at first use, shared by every gateway: the key of its chunk
-- hashes (purpose 'chunk-hash'), so chunk names reveal nothing of their bytes.
CREATE TABLE IF NOT EXISTS profile_secrets (
    profile text NOT NULL,
    purpose text NOT NULL,
    secret  bytea NOT NULL,
    PRIMARY KEY (profile, purpose)
);

-- Version 10. The node (gateway.meta.nodes) each local profile's directory is on: a local
-- profile is served by one node only.
CREATE TABLE IF NOT EXISTS local_profiles (
    profile    text PRIMARY KEY,
    node_id    uuid NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- Version 11. Access keys made by `gateway keys create` (gateway.meta.access_keys), beside the
-- YAML's credentials. S3 signatures need the secret itself, so it is kept sealed (AES-256-GCM,
-- bound to its access key), not hashed; sealed_with names the key that sealed it: 'config'
-- (access_keys.encryption_key) or 'database' (the 'access-keys' row of gateway_secrets).
-- grants: bucket (or "*") -> read | write | read-write. A revoked key keeps its row, for the
-- record; create and revoke NOTIFY gateway_keys, so every gateway reloads its copy at once.
CREATE TABLE IF NOT EXISTS access_keys (
    access_key  text PRIMARY KEY,
    name        text,
    secret      bytea NOT NULL,
    sealed_with text NOT NULL CHECK (sealed_with IN ('config', 'database')),
    grants      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);
-- Secrets the gateway generates once for itself, by purpose.
CREATE TABLE IF NOT EXISTS gateway_secrets (
    purpose text PRIMARY KEY,
    secret  bytea NOT NULL
);

-- Version 12. Objects and bytes per bucket, kept exact in the transactions that change objects
-- (by the trigger below) and never counted by a scan on the request path. Each change appends
-- a delta row, so concurrent writers to one bucket never wait on one counter row; the janitor
-- folds deltas into bucket_usage, and a reader sums bucket_usage and the deltas left. When the
-- table is first made it is seeded from the objects already there, in this same transaction.
DO $$
BEGIN
    IF to_regclass('bucket_usage') IS NULL THEN
        CREATE TABLE bucket_usage (
            bucket  text COLLATE "C" PRIMARY KEY,
            objects bigint NOT NULL,
            bytes   bigint NOT NULL
        );
        LOCK TABLE objects IN SHARE MODE;
        INSERT INTO bucket_usage (bucket, objects, bytes)
        SELECT bucket, count(*), coalesce(sum(size), 0) FROM objects GROUP BY bucket;
    END IF;
END
$$;
CREATE TABLE IF NOT EXISTS bucket_usage_deltas (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket  text COLLATE "C" NOT NULL,
    objects bigint NOT NULL,
    bytes   bigint NOT NULL
);

CREATE OR REPLACE FUNCTION gateway_count_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO bucket_usage_deltas (bucket, objects, bytes) VALUES (NEW.bucket, 1, NEW.size);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO bucket_usage_deltas (bucket, objects, bytes)
        VALUES (OLD.bucket, -1, -OLD.size);
    ELSIF OLD.bucket = NEW.bucket THEN
        INSERT INTO bucket_usage_deltas (bucket, objects, bytes)
        VALUES (NEW.bucket, 0, NEW.size - OLD.size);
    ELSE
        INSERT INTO bucket_usage_deltas (bucket, objects, bytes)
        VALUES (OLD.bucket, -1, -OLD.size), (NEW.bucket, 1, NEW.size);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS objects_count_usage ON objects;
CREATE TRIGGER objects_count_usage AFTER INSERT OR DELETE ON objects
    FOR EACH ROW EXECUTE FUNCTION gateway_count_usage();
DROP TRIGGER IF EXISTS objects_count_usage_update ON objects;
-- An overwrite of the same size changes no count: no row.
CREATE TRIGGER objects_count_usage_update AFTER UPDATE OF bucket, size ON objects
    FOR EACH ROW WHEN (OLD.bucket IS DISTINCT FROM NEW.bucket OR OLD.size <> NEW.size)
    EXECUTE FUNCTION gateway_count_usage();

-- Version 13 (quotas). A bucket's quota is settings->'quota' ({"max_bytes": N, "max_objects":
-- N}, either may be absent). Usage counts every stored object row, whatever its currency (so a
-- later versioning change keeps non-current versions counted by keeping their rows here), and
-- the bytes of multipart parts in progress, apart (upload_bytes): they count toward bytes, not
-- objects, until their upload completes. A reader of one bucket's usage finds its deltas by
-- the index.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'bucket_usage' AND column_name = 'upload_bytes') THEN
        ALTER TABLE bucket_usage ADD COLUMN upload_bytes bigint NOT NULL DEFAULT 0;
        ALTER TABLE bucket_usage_deltas ADD COLUMN upload_bytes bigint NOT NULL DEFAULT 0;
        LOCK TABLE upload_parts IN SHARE MODE;
        INSERT INTO bucket_usage (bucket, objects, bytes, upload_bytes)
        SELECT u.bucket, 0, 0, sum(p.size) FROM upload_parts p JOIN uploads u USING (upload_id)
        GROUP BY u.bucket
        ON CONFLICT (bucket) DO UPDATE SET upload_bytes = EXCLUDED.upload_bytes;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS bucket_usage_deltas_by_bucket ON bucket_usage_deltas (bucket);

-- Parts are always deleted before their upload (completion, abort), so the upload's row still
-- names the bucket here.
CREATE OR REPLACE FUNCTION gateway_count_upload_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    b text;
BEGIN
    SELECT bucket INTO b FROM uploads
    WHERE upload_id = CASE WHEN TG_OP = 'DELETE' THEN OLD.upload_id ELSE NEW.upload_id END;
    IF b IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO bucket_usage_deltas (bucket, objects, bytes, upload_bytes)
    VALUES (b, 0, 0, CASE TG_OP WHEN 'INSERT' THEN NEW.size WHEN 'DELETE' THEN -OLD.size
                               ELSE NEW.size - OLD.size END);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS upload_parts_count_usage ON upload_parts;
CREATE TRIGGER upload_parts_count_usage AFTER INSERT OR DELETE ON upload_parts
    FOR EACH ROW EXECUTE FUNCTION gateway_count_upload_bytes();
DROP TRIGGER IF EXISTS upload_parts_count_usage_update ON upload_parts;
CREATE TRIGGER upload_parts_count_usage_update AFTER UPDATE OF size ON upload_parts
    FOR EACH ROW WHEN (OLD.size <> NEW.size) EXECUTE FUNCTION gateway_count_upload_bytes();

-- A bucket's usage now: its folded totals and the deltas left (objects, bytes of objects,
-- bytes of parts in progress).
CREATE OR REPLACE FUNCTION gateway_bucket_usage(
    p_bucket text, OUT objects bigint, OUT bytes bigint, OUT upload_bytes bigint
) LANGUAGE sql STABLE AS $$
    SELECT coalesce(u.objects, 0) + coalesce(d.objects, 0),
           coalesce(u.bytes, 0) + coalesce(d.bytes, 0),
           coalesce(u.upload_bytes, 0) + coalesce(d.upload_bytes, 0)
    FROM (SELECT 1) one
    LEFT JOIN bucket_usage u ON u.bucket = p_bucket
    LEFT JOIN (SELECT sum(objects)::bigint AS objects, sum(bytes)::bigint AS bytes,
                      sum(upload_bytes)::bigint AS upload_bytes
               FROM bucket_usage_deltas WHERE bucket = p_bucket) d ON true
$$;

-- Refuse (SQLSTATE GQ001, message 'objects' or 'bytes', detail the limit) a change that grew
-- the bucket's usage past its quota; call it after the change, in its transaction. Only a
-- bucket with a quota takes the lock, which serialises the checks of its writers until each
-- commits: a writer's check sees every change committed before it, so no two can each pass
-- with the room for one. A change that does not grow usage always passes (a replace by an
-- object of the same size at a full quota, a delete, a quota lowered under usage). The check
-- folds the bucket's committed deltas (and its own) into its total as it reads it, so it sums
-- only the deltas since the last check, never the janitor's whole interval's worth; it waits
-- for a fold of the janitor's in progress, which never waits for it (SKIP LOCKED).
CREATE OR REPLACE FUNCTION gateway_check_quota(
    p_bucket text, p_objects bigint, p_bytes bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q jsonb;
    used_objects bigint;
    used_bytes bigint;
BEGIN
    IF p_objects <= 0 AND p_bytes <= 0 THEN
        RETURN;
    END IF;
    SELECT settings->'quota' INTO q FROM buckets WHERE name = p_bucket;
    IF q IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('quota/' || p_bucket, 0));
    WITH gone AS (
        DELETE FROM bucket_usage_deltas WHERE bucket = p_bucket
        RETURNING objects, bytes, upload_bytes
    )
    INSERT INTO bucket_usage AS t (bucket, objects, bytes, upload_bytes)
    SELECT p_bucket, coalesce(sum(g.objects), 0), coalesce(sum(g.bytes), 0),
           coalesce(sum(g.upload_bytes), 0)
    FROM gone g
    ON CONFLICT (bucket) DO UPDATE SET objects = t.objects + EXCLUDED.objects,
        bytes = t.bytes + EXCLUDED.bytes, upload_bytes = t.upload_bytes + EXCLUDED.upload_bytes
    RETURNING t.objects, t.bytes + t.upload_bytes INTO used_objects, used_bytes;
    IF p_objects > 0 AND q ? 'max_objects' AND used_objects > (q->>'max_objects')::bigint THEN
        RAISE EXCEPTION 'objects' USING ERRCODE = 'GQ001', DETAIL = q->>'max_objects';
    END IF;
    IF p_bytes > 0 AND q ? 'max_bytes' AND used_bytes > (q->>'max_bytes')::bigint THEN
        RAISE EXCEPTION 'bytes' USING ERRCODE = 'GQ001', DETAIL = q->>'max_bytes';
    END IF;
END
$$;

-- Version 14 (versioning). A bucket's versioning state is settings->>'versioning': absent
-- (never enabled), 'Enabled' or 'Suspended'. `objects` keeps holding the current version of
-- each key, so listing the current objects stays one indexed query per page whatever the
-- history; every other version, and every delete marker, is a row of object_versions. A
-- version keeps its version_id when it moves between the two tables, so its chunks, tags and
-- derivatives follow it without a copy. A key whose newest version is a delete marker has no
-- row in `objects`. null_version marks the version S3 calls "null" (written while the bucket
-- was unversioned or suspended): at most one per key, across both tables.
ALTER TABLE objects ADD COLUMN IF NOT EXISTS null_version boolean NOT NULL DEFAULT true;
CREATE SEQUENCE IF NOT EXISTS object_versions_seq;
CREATE TABLE IF NOT EXISTS object_versions (
    version_id    uuid PRIMARY KEY,
    bucket        text COLLATE "C" NOT NULL REFERENCES buckets (name),
    key           text COLLATE "C" NOT NULL,
    -- Newest first within a key: a version gets its number when it stops being current (or
    -- is written, for a delete marker), and versions stop being current in the order written.
    seq           bigint NOT NULL DEFAULT nextval('object_versions_seq'),
    delete_marker boolean NOT NULL DEFAULT false,
    null_version  boolean NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    etag          text NOT NULL,
    content_type  text NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    profile       text NOT NULL,
    storage_key   text,
    last_modified timestamptz NOT NULL,
    parts_count   integer,
    storage_etag  text,
    inline_data   bytea
);
CREATE INDEX IF NOT EXISTS object_versions_by_key ON object_versions (bucket, key, seq DESC);
CREATE UNIQUE INDEX IF NOT EXISTS object_versions_null ON object_versions (bucket, key)
    WHERE null_version;

-- Non-current versions count toward usage and quotas as current ones do (their bytes are
-- stored); delete markers hold no bytes and are no objects.
DROP TRIGGER IF EXISTS object_versions_count_usage ON object_versions;
CREATE TRIGGER object_versions_count_usage AFTER INSERT ON object_versions
    FOR EACH ROW WHEN (NOT NEW.delete_marker) EXECUTE FUNCTION gateway_count_usage();
DROP TRIGGER IF EXISTS object_versions_count_usage_delete ON object_versions;
CREATE TRIGGER object_versions_count_usage_delete AFTER DELETE ON object_versions
    FOR EACH ROW WHEN (NOT OLD.delete_marker) EXECUTE FUNCTION gateway_count_usage();

-- Keep a version that stops being current as a non-current one (its blobs stay referenced).
CREATE OR REPLACE FUNCTION gateway_keep_version(old objects) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO object_versions (version_id, bucket, key, null_version, size, etag,
        content_type, metadata, profile, storage_key, last_modified, parts_count,
        storage_etag, inline_data)
    VALUES (old.version_id, old.bucket, old.key, old.null_version, old.size, old.etag,
        old.content_type, old.metadata, old.profile, old.storage_key, old.last_modified,
        old.parts_count, old.storage_etag, old.inline_data);
END
$$;

-- Retire the key's non-current null version, if any (a new null version replaces it).
-- Returns the (objects, bytes) it counted for.
CREATE OR REPLACE FUNCTION gateway_drop_null_version(
    p_bucket text, p_key text, OUT objects bigint, OUT bytes bigint
) LANGUAGE plpgsql AS $$
DECLARE
    gone object_versions%ROWTYPE;
BEGIN
    objects := 0;
    bytes := 0;
    DELETE FROM object_versions WHERE bucket = p_bucket AND key = p_key AND null_version
    RETURNING * INTO gone;
    IF FOUND THEN
        PERFORM gateway_retire(
            gone.version_id, gone.profile, gone.storage_key, gone.storage_etag, gone.parts_count
        );
        IF NOT gone.delete_marker THEN
            objects := 1;
            bytes := gone.size;
        END IF;
    END IF;
END
$$;

-- DeleteObject without a version id on a bucket whose versioning is enabled or suspended:
-- the current version (if any) becomes non-current, or is retired if both it and the marker
-- are the null version, and a delete marker becomes the newest version of the key.
CREATE OR REPLACE FUNCTION gateway_delete_key(
    p_bucket text, p_key text, p_marker uuid, p_null_marker boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    old objects%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_bucket || '/' || p_key, 0));
    IF p_null_marker THEN
        PERFORM gateway_drop_null_version(p_bucket, p_key);
    END IF;
    DELETE FROM objects WHERE bucket = p_bucket AND key = p_key RETURNING * INTO old;
    IF FOUND THEN
        IF p_null_marker AND old.null_version THEN
            PERFORM gateway_retire(
                old.version_id, old.profile, old.storage_key, old.storage_etag, old.parts_count
            );
        ELSE
            PERFORM gateway_keep_version(old);
        END IF;
    END IF;
    INSERT INTO object_versions (version_id, bucket, key, delete_marker, null_version, size,
        etag, content_type, profile, last_modified)
    VALUES (p_marker, p_bucket, p_key, true, p_null_marker, 0, '', '', '', now());
END
$$;

-- DeleteObject ?versionId=: remove that version for good ('none': no such version; 'marker'
-- or 'object': what it was). If the current version goes, or the delete marker that hid the
-- key, the newest version left becomes current unless it is a delete marker.
CREATE OR REPLACE FUNCTION gateway_delete_version(
    p_bucket text, p_key text, p_version uuid, p_null boolean
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    cur objects%ROWTYPE;
    gone object_versions%ROWTYPE;
    outcome text := 'object';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_bucket || '/' || p_key, 0));
    DELETE FROM objects WHERE bucket = p_bucket AND key = p_key
        AND CASE WHEN p_null THEN null_version ELSE version_id = p_version AND NOT null_version END
    RETURNING * INTO cur;
    IF FOUND THEN
        PERFORM gateway_retire(
            cur.version_id, cur.profile, cur.storage_key, cur.storage_etag, cur.parts_count
        );
    ELSE
        DELETE FROM object_versions WHERE bucket = p_bucket AND key = p_key
            AND CASE WHEN p_null THEN null_version
                     ELSE version_id = p_version AND NOT null_version END
        RETURNING * INTO gone;
        IF NOT FOUND THEN
            RETURN 'none';
        END IF;
        PERFORM gateway_retire(
            gone.version_id, gone.profile, gone.storage_key, gone.storage_etag, gone.parts_count
        );
        IF gone.delete_marker THEN
            outcome := 'marker';
        END IF;
        IF EXISTS (SELECT 1 FROM objects WHERE bucket = p_bucket AND key = p_key) THEN
            RETURN outcome;
        END IF;
    END IF;
    DELETE FROM object_versions WHERE version_id = (
        SELECT version_id FROM object_versions WHERE bucket = p_bucket AND key = p_key
        ORDER BY seq DESC LIMIT 1
    ) AND NOT delete_marker
    RETURNING * INTO gone;
    IF FOUND THEN
        INSERT INTO objects (bucket, key, version_id, size, etag, content_type, profile,
            storage_key, last_modified, metadata, parts_count, storage_etag, inline_data,
            null_version)
        VALUES (gone.bucket, gone.key, gone.version_id, gone.size, gone.etag,
            gone.content_type, gone.profile, gone.storage_key, gone.last_modified,
            gone.metadata, gone.parts_count, gone.storage_etag, gone.inline_data,
            gone.null_version);
    END IF;
    RETURN outcome;
END
$$;

-- Version 16 (lifecycle rules). When a version stopped being current: NoncurrentDays count from
-- then. A version gets its row when it stops being current, so that is when the row was
-- written (for a delete marker, when it was written, current or not); rows kept before this
-- version count from when it was applied, which only ever delays their expiry.
ALTER TABLE object_versions ADD COLUMN IF NOT EXISTS noncurrent_since timestamptz NOT NULL
    DEFAULT now();

-- Version 16. Maintenance passes that one process of all runs at a time, at most once per
-- interval (lifecycle rules): when each last started.
CREATE TABLE IF NOT EXISTS maintenance_passes (
    name    text PRIMARY KEY,
    started timestamptz NOT NULL
);

-- Version 17 (derivative clean-up). Variant keys stored derivatives have that the presets of
-- some gateway no longer make (edited or removed), and since when: each janitor adds the keys
-- its own presets do not make and removes those they do, so a key stays here only while no
-- running gateway makes it, and its derivatives go once it has been here long enough.
CREATE TABLE IF NOT EXISTS stale_variant_keys (
    variant_key text PRIMARY KEY,
    since       timestamptz NOT NULL DEFAULT now()
);
-- The distinct keys of the derivatives (a skip scan), and a key's derivatives in batches.
CREATE INDEX IF NOT EXISTS derivatives_by_variant_key ON derivatives (variant_key);
-- Failed renders whose record is past the back-off ceiling.
CREATE INDEX IF NOT EXISTS derivatives_failed ON derivatives (next_retry_at)
    WHERE status = 'failed';

INSERT INTO schema_version (version) VALUES (3), (4), (5), (6), (7), (8), (9), (10), (11),
    (12), (13), (14), (16), (17), (18), (19)
    ON CONFLICT DO NOTHING;
