"""Two gateway nodes on one database and one upstream, as on two machines: separate
configuration files, data directories and ports. Whatever one node does, the other sees, and
the work they share (renders, eager jobs, the janitor) is done once."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions
import pytest
import requests
import yaml
from PIL import Image

from tests.conftest import (
    EAGER_BUCKET,
    UPSTREAM_ENV,
    UPSTREAM_VARIANTS_PREFIX,
    GatewayProcess,
    MotoServer,
    S3Client,
    client,
    create_database,
    db_fetch,
    free_port,
    run_gateway,
    upstream_storage,
    wait_for,
    wait_for_stored_variants,
    write_config,
)
from tests.test_variants import signed

UPSTREAM_BUCKET = "nodes-upstream"
# Deleted objects' variants go within seconds: the janitors look every second. Not at once:
# the grace period also covers blobs being written, and an entry being collected.
LIMITS = {"garbage_grace_seconds": 2, "janitor_interval_seconds": 1, "body_idle_timeout_seconds": 5}
JANITOR_REMOVED = re.compile(r"janitor removed (\d+) blobs")


@dataclass
class Nodes:
    first: GatewayProcess
    second: GatewayProcess
    upstream: S3Client

    @property
    def both(self) -> tuple[GatewayProcess, GatewayProcess]:
        return self.first, self.second

    def variant_blobs(self) -> list[str]:
        listing = self.upstream.list_objects_v2(
            Bucket=UPSTREAM_BUCKET, Prefix=UPSTREAM_VARIANTS_PREFIX
        )
        return [entry["Key"] for entry in listing.get("Contents", [])]


def shared_storage(moto: MotoServer) -> dict[str, object]:
    """Only the upstream profile: a local one is a single node's."""
    storage = upstream_storage(moto)
    profiles = dict(storage["storage_profiles"])  # type: ignore[call-overload]
    del profiles["default"]
    (name,) = profiles
    profiles[name] = {**profiles[name], "bucket": UPSTREAM_BUCKET}
    return {**storage, "storage_profiles": profiles}


@pytest.fixture(scope="module")
def nodes(tmp_root: Path, pg_server_dsn: str, moto_server: MotoServer) -> Iterator[Nodes]:
    upstream = moto_server.client()
    upstream.create_bucket(Bucket=UPSTREAM_BUCKET)
    dsn = create_database(pg_server_dsn)
    storage = shared_storage(moto_server)
    directory = tmp_root / "nodes"
    directory.mkdir()
    with (
        run_gateway(directory / "one", dsn, storage, UPSTREAM_ENV, limits=LIMITS) as first,
        run_gateway(directory / "two", dsn, storage, UPSTREAM_ENV, limits=LIMITS) as second,
    ):
        yield Nodes(first, second, upstream)


def jpeg(seed: int) -> bytes:
    image = Image.new("RGB", (320, 200), (seed % 256, 90, 160))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def new_bucket(nodes: Nodes) -> str:
    name = f"nodes-{uuid.uuid4().hex[:10]}"
    client(nodes.first.endpoint).create_bucket(Bucket=name)
    return name


def test_what_one_node_writes_the_other_reads(nodes: Nodes) -> None:
    bucket = new_bucket(nodes)
    one, two = client(nodes.first.endpoint), client(nodes.second.endpoint)
    one.put_object(Bucket=bucket, Key="a.txt", Body=b"from the first node")
    two.put_object(Bucket=bucket, Key="b.txt", Body=b"from the second node")
    assert two.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"from the first node"
    assert one.get_object(Bucket=bucket, Key="b.txt")["Body"].read() == b"from the second node"
    for s3 in (one, two):
        listing = s3.list_objects_v2(Bucket=bucket)
        assert [entry["Key"] for entry in listing["Contents"]] == ["a.txt", "b.txt"]
    # A bucket made through one node is known to the other, and an overwrite through one
    # is what the other serves next.
    two.put_object(Bucket=bucket, Key="a.txt", Body=b"rewritten")
    assert one.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"rewritten"
    two.delete_object(Bucket=bucket, Key="a.txt")
    assert "Contents" not in one.list_objects_v2(Bucket=bucket, Prefix="a.txt")


def test_a_variant_asked_of_both_nodes_at_once_renders_once(nodes: Nodes) -> None:
    bucket = new_bucket(nodes)
    client(nodes.first.endpoint).put_object(
        Bucket=bucket, Key="photo.jpg", Body=jpeg(1), ContentType="image/jpeg"
    )
    before = set(nodes.variant_blobs())

    def fetch(index: int) -> requests.Response:
        node = nodes.both[index % 2]
        return signed(node.endpoint, "GET", f"/{bucket}/photo.jpg?variant=thumb")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(fetch, range(8)))
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.content for answer in answers}) == 1
    wait_for_stored_variants(nodes.first.dsn)
    # One rendered blob, and no second one written and thrown away.
    assert len(set(nodes.variant_blobs()) - before) == 1
    rows = db_fetch(nodes.first.dsn, "SELECT count(*) AS n FROM garbage")
    assert rows[0]["n"] == 0


def test_eager_jobs_and_the_janitor_run_once_across_nodes(nodes: Nodes) -> None:
    one = client(nodes.first.endpoint)
    keys = [f"eager-{uuid.uuid4().hex[:8]}-{n}.jpg" for n in range(4)]
    before = set(nodes.variant_blobs())
    for n, key in enumerate(keys):
        one.put_object(Bucket=EAGER_BUCKET, Key=key, Body=jpeg(n), ContentType="image/jpeg")

    def rendered() -> bool:
        rows = db_fetch(nodes.first.dsn, "SELECT count(*) AS n FROM variant_jobs")
        return rows[0]["n"] == 0 and len(set(nodes.variant_blobs()) - before) == len(keys)

    # Both nodes' eager renderers take jobs from the one queue: each job is rendered once.
    assert wait_for(rendered, 30)
    made = set(nodes.variant_blobs()) - before
    assert len(made) == len(keys)
    removed_before = [janitor_removed(node) for node in nodes.both]
    # Deleting the sources retires their variants; whichever janitor runs first deletes each
    # blob, and no blob is deleted twice.
    one.delete_objects(Bucket=EAGER_BUCKET, Delete={"Objects": [{"Key": key} for key in keys]})

    def collected() -> bool:
        rows = db_fetch(nodes.first.dsn, "SELECT count(*) AS n FROM garbage")
        return rows[0]["n"] == 0 and not made & set(nodes.variant_blobs())

    assert wait_for(collected, 30)
    # A pass logs what it removed just after its entries leave the log.
    assert wait_for(lambda: removed_since(nodes, removed_before) >= len(keys), 10)
    assert removed_since(nodes, removed_before) == len(keys)


def removed_since(nodes: Nodes, before: list[int]) -> int:
    return sum(janitor_removed(node) - old for node, old in zip(nodes.both, before, strict=True))


def janitor_removed(node: GatewayProcess) -> int:
    assert node.log_path is not None
    text = node.log_path.read_text()
    return sum(int(found) for found in JANITOR_REMOVED.findall(text))


def test_a_node_with_another_nodes_local_profile_is_refused(nodes: Nodes, tmp_path: Path) -> None:
    """The first node claimed its local profile; a second node naming a local profile the same
    (its own directory) would read and collect blobs in the wrong place."""
    one, two = nodes.first, nodes.second
    profiles = {**one.storage["storage_profiles"], "scratch": {"type": "local"}}  # type: ignore[dict-item]
    first = one.sibling(tmp_path / "first.yaml", storage_profiles=profiles)
    with first.running():
        pass
    second = GatewayProcess(
        tmp_path / "second.yaml", two.data_dir, free_port(), env=two.env, dsn=two.dsn
    )
    storage = {**two.storage, "storage_profiles": profiles}
    write_config(second.config_path, two.data_dir, second.port, two.dsn, **storage)
    done = second.command("serve")
    assert done.returncode == 2
    assert "storage_profiles.scratch: this local profile is served by another gateway node" in (
        done.stderr
    )
    # The node that holds it still starts.
    with first.running():
        pass


def test_keys_and_reloads_apply_on_both_nodes(nodes: Nodes) -> None:
    bucket = new_bucket(nodes)
    done = nodes.first.command("keys", "create", "--grant", f"{bucket}=read-write", "--json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    made_on_one = client(nodes.second.endpoint, created["access_key"], created["secret_key"])
    # A key made through one node's command signs on the other within seconds.
    assert becomes(made_on_one, bucket, 200)
    done = nodes.second.command("keys", "revoke", created["access_key"])
    assert done.returncode == 0, done.stderr
    for node in nodes.both:
        revoked = client(node.endpoint, created["access_key"], created["secret_key"])
        assert becomes(revoked, bucket, 403)

    # Each node's file gains a credential; one `reload --all-nodes` has both read theirs.
    secret = "reloaded-everywhere-secret"
    for node in nodes.both:
        config = yaml.safe_load(node.config_path.read_text())
        config["credentials"].append(
            {"access_key": "NODESRELOADED", "secret_key": secret, "buckets": {bucket: "read"}}
        )
        node.config_path.write_text(yaml.safe_dump(config))
    done = nodes.first.command("reload", "--all-nodes")
    assert done.returncode == 0, done.stderr
    for node in nodes.both:
        assert becomes(client(node.endpoint, "NODESRELOADED", secret), bucket, 200)


def becomes(s3: S3Client, bucket: str, status: int) -> bool:
    """Whether ListObjectsV2 of ``bucket`` signed by ``s3``'s credential answers ``status``
    within seconds."""
    return wait_for(lambda: answers(s3, bucket) == status, 10)


def answers(s3: S3Client, bucket: str) -> int:
    """The status of a ListObjectsV2 of ``bucket`` signed by ``s3``'s credential."""
    try:
        return int(s3.list_objects_v2(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"])
    except botocore.exceptions.ClientError as error:
        return int(error.response["ResponseMetadata"]["HTTPStatusCode"])
