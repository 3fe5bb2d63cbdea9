"""The image and compose.yaml, checked without a container engine: the compose file's
services, ports, volumes and secrets agree with each other, the node configuration it mounts
loads as the gateway loads it, the load balancer names both nodes, the Dockerfile runs the
gateway under an init with the pinned dependencies, and this environment is the pinned set."""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.config import UpstreamProfile, load_config
from tests.conftest import REPO

NODES = ("gateway-1", "gateway-2")
# compose's interpolation: ${VAR} and ${VAR:-default}.
COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolated(value: str, environ: dict[str, str]) -> str:
    """``value`` as compose reads it with ``environ`` set."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if environ.get(name):
            return environ[name]
        assert default is not None, f"{name} has no default in compose.yaml"
        return default

    return COMPOSE_VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def environment(service: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, str]:
    return {
        name: interpolated(str(value), environ or {})
        for name, value in service.get("environment", {}).items()
    }


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of the service's short-syntax volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found


def image_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage."""
    final_stage = (REPO / "Dockerfile").read_text().rpartition("\nFROM ")[2]
    return dict(re.findall(r"(GATEWAY_\w+)=(\S+)", final_stage))


def test_compose_runs_two_nodes_postgres_minio_and_a_load_balancer(
    services: dict[str, Any],
) -> None:
    assert set(services) == {*NODES, "load-balancer", "postgres", "minio", "minio-bucket"}
    for node in NODES:
        # One image, built from this repository's Dockerfile.
        assert services[node]["build"] == "."
        assert services[node]["image"] == services[NODES[0]]["image"]


def test_only_the_load_balancer_is_published_and_on_loopback_by_default(
    services: dict[str, Any],
) -> None:
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert list(published) == ["load-balancer"]
    (port,) = published["load-balancer"]
    host, _, target = interpolated(port, {}).rpartition(":")
    assert host == "127.0.0.1:9000"
    assert target == "9000"
    assert interpolated(port, {"GATEWAY_PUBLISH": "0.0.0.0:80"}) == "0.0.0.0:80:9000"


def test_every_named_volume_is_declared_and_each_node_has_its_own(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    named = {
        source
        for service in services.values()
        for source, _ in mounts(service).values()
        if not source.startswith(".")
    }
    assert named == set(compose["volumes"])
    data = [mounts(services[node])["/data"][0] for node in NODES]
    assert len(set(data)) == len(NODES)
    assert mounts(services["postgres"])["/var/lib/postgresql/data"][0] in named
    assert mounts(services["minio"])["/data"][0] in named
    assert image_environment()["GATEWAY_DATA_DIR"] == "/data"


def test_files_from_the_repository_are_mounted_read_only(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, (source, mode) in mounts(service).items():
            if source.startswith("."):
                assert (REPO / source).is_file(), f"{name}: {source}"
                assert mode == "ro", f"{name}: {target}"


@pytest.mark.parametrize("environ", [{}, {"POSTGRES_PASSWORD": "p1", "MINIO_ROOT_USER": "m1"}])
def test_each_node_loads_its_configuration_on_the_shared_postgres_and_bucket(
    services: dict[str, Any], environ: dict[str, str]
) -> None:
    postgres = environment(services["postgres"], environ)
    minio = environment(services["minio"], environ)
    bucket_command = services["minio-bucket"]["entrypoint"]
    for node in NODES:
        env = {**image_environment(), **environment(services[node], environ)}
        source, _ = mounts(services[node])[env["GATEWAY_CONFIG"]]
        config = load_config(REPO / source, env)
        assert config.host_port == ("0.0.0.0", 9000)
        # Postgres and MinIO as their services are set up, with the same secrets.
        assert config.database.url == (
            f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
            f"@postgres:5432/{postgres['POSTGRES_DB']}"
        )
        # Only upstream profiles: a local one is one node's.
        assert all(isinstance(p, UpstreamProfile) for p in config.storage_profiles.values())
        profile = config.storage_profiles[config.default_profile]
        assert isinstance(profile, UpstreamProfile)
        assert profile.endpoint_url == "http://minio:9000"
        assert (profile.access_key, profile.secret_key) == (
            minio["MINIO_ROOT_USER"],
            minio["MINIO_ROOT_PASSWORD"],
        )
        assert bucket_command[-1] == f"upstream/{profile.bucket}"
        assert env["GATEWAY_ROOT_SECRET_KEY"]
    # The same root credential everywhere.
    roots = {
        (env["GATEWAY_ROOT_ACCESS_KEY"], env["GATEWAY_ROOT_SECRET_KEY"])
        for env in (environment(services[node], environ) for node in NODES)
    }
    assert len(roots) == 1
    bucket_env = environment(services["minio-bucket"], environ)
    assert bucket_env["MC_HOST_upstream"] == (
        f"http://{minio['MINIO_ROOT_USER']}:{minio['MINIO_ROOT_PASSWORD']}@minio:9000"
    )


def test_services_start_in_order_of_health(services: dict[str, Any]) -> None:
    for node in NODES:
        assert services[node]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "minio-bucket": {"condition": "service_completed_successfully"},
        }
    assert services["load-balancer"]["depends_on"] == {
        node: {"condition": "service_healthy"} for node in NODES
    }
    assert services["minio-bucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    for name in (*NODES, "load-balancer", "postgres", "minio"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    check = " ".join(services[NODES[0]]["healthcheck"]["test"])
    assert "http://127.0.0.1:9000/_gateway/health" in check


def test_load_balancer_names_both_nodes_on_their_port(services: dict[str, Any]) -> None:
    source, _ = mounts(services["load-balancer"])["/etc/nginx/nginx.conf"]
    conf = (REPO / source).read_text()
    port = image_environment()["GATEWAY_LISTEN"].rpartition(":")[2]
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.MULTILINE)
    assert sorted(servers) == [(node, port) for node in NODES]
    assert re.search(r"^\s*listen\s+9000;", conf, re.MULTILINE)
    # SigV4 signs the Host header and the path as the client sent them.
    assert "proxy_set_header Host $http_host;" in conf
    assert re.search(r"proxy_pass http://gateways;", conf)
    assert "client_max_body_size 0;" in conf


def test_dockerfile_runs_the_gateway_under_an_init_with_the_pinned_dependencies() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tini", "--", "gateway"]' in dockerfile
    assert re.search(r"apt-get install .*\btini\b", dockerfile)
    assert "pip install --constraint constraints.txt ." in dockerfile
    included = (REPO / ".dockerignore").read_text().splitlines()
    assert "!constraints.txt" in included


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, separator, version = line.partition("==")
            assert separator and version, line
            pins[canonicalize_name(name)] = version
    return pins


def required(name: str, extras: frozenset[str], seen: set[str]) -> None:
    """Add the distributions ``name`` (with ``extras``) requires here, and theirs, to ``seen``."""
    for text in importlib.metadata.requires(name) or []:
        requirement = Requirement(text)
        marker = requirement.marker or Marker("python_version >= '0'")
        if not any(marker.evaluate({"extra": extra}) for extra in extras | {""}):
            continue
        key = canonicalize_name(requirement.name)
        if key not in seen:
            seen.add(key)
            required(requirement.name, frozenset(requirement.extras), seen)


def test_the_tested_environment_is_the_pinned_set() -> None:
    pins = pinned()
    needed: set[str] = set()
    required("gateway", frozenset({"test"}), needed)
    assert needed - set(pins) == set()
    installed = {name: importlib.metadata.version(name) for name in needed}
    assert installed == {name: pins[name] for name in needed}
