"""Configuration loading and the root credential file: pure, no server or database."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.app import ROOT_CREDENTIALS_FILE, root_credential
from gateway.config import (
    DEFAULT_LISTEN,
    ChunkingConfig,
    ConfigError,
    GatewayConfig,
    LocalProfile,
    UpstreamProfile,
    interpolate,
    literal_secrets,
    load_config,
    parse_size,
)
from gateway.s3.website import WebsiteConfiguration

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.yaml"
# What config.example.yaml requires from the environment.
EXAMPLE_ENV = {
    "READER_SECRET_KEY": "reader-secret-value",
    "PUBLISHER_SECRET_KEY": "publisher-secret-value",
}


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> GatewayConfig:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_config(path, environ or {})


def load_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text, environ)
    return str(excinfo.value)


# --- defaults and environment overrides -----------------------------------------------------


def test_defaults_without_a_file() -> None:
    config = load_config(None, {})
    assert config.listen == DEFAULT_LISTEN
    assert config.host_port == ("127.0.0.1", 9000)
    assert config.region == "us-east-1"
    assert config.data_dir == Path("data")
    assert config.database.url is None
    assert config.tls is None
    assert config.storage_profiles == {"default": LocalProfile()}
    assert config.blob_root("default") == Path("data/blobs")
    assert config.buckets == {}
    assert config.credentials == []
    assert config.limits.max_object_size == 5 * 1024**3


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == load_config(None, {})


def test_environment_alone_configures_a_container() -> None:
    config = load_config(
        None,
        {
            "GATEWAY_LISTEN": "0.0.0.0:9100",
            "GATEWAY_DATA_DIR": "/data",
            "GATEWAY_DATABASE_URL": "postgresql://db/gateway",
        },
    )
    assert config.host_port == ("0.0.0.0", 9100)
    assert config.data_dir == Path("/data")
    assert config.blob_root("default") == Path("/data/blobs")
    assert config.database.url == "postgresql://db/gateway"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        listen: 127.0.0.1:9000
        data_dir: here
        database: {url: "postgresql://file/db", pool_max_size: 7}
        """,
        {"GATEWAY_LISTEN": "[::]:9443", "GATEWAY_DATABASE_URL": "postgresql://env/db"},
    )
    assert config.host_port == ("::", 9443)
    assert config.data_dir == Path("here")
    assert config.database.url == "postgresql://env/db"
    assert config.database.pool_max_size == 7


def test_database_url_override_needs_a_database_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "database: 5\n", {"GATEWAY_DATABASE_URL": "postgresql://x"})
    assert message == "database: expected a mapping"


def test_bad_listen_from_the_environment_names_listen() -> None:
    with pytest.raises(ConfigError, match=r"^listen: expected host:port, got 'nowhere'$"):
        load_config(None, {"GATEWAY_LISTEN": "nowhere"})


# --- ${VAR} interpolation -------------------------------------------------------------------


def test_interpolation(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        region: ${REGION:-eu-west-1}
        database:
          url: postgresql://gateway:${DB_PASSWORD}@${DB_HOST:-localhost}/gateway
        credentials:
          - access_key: ${READER_KEY:-reader}
            secret_key: ${READER_SECRET}
            buckets: {photos: read}
        limits:
          max_object_size: ${MAX_OBJECT:-64MiB}
        buckets:
          photos: {public_read: "${PHOTOS_PUBLIC:-false}"}
        """,
        {"DB_PASSWORD": "p@ss", "READER_SECRET": "s3cret-value", "REGION": "ap-south-1"},
    )
    assert config.region == "ap-south-1"  # set: the default is ignored
    assert config.database.url == "postgresql://gateway:p@ss@localhost/gateway"
    assert config.credentials[0].access_key == "reader"
    assert config.credentials[0].secret_key == "s3cret-value"
    # Defaults go through the same parsing as literal values.
    assert config.limits.max_object_size == 64 * 1024**2
    assert config.buckets["photos"].public_read is False


def test_interpolation_default_may_be_empty() -> None:
    assert interpolate({"a": "x${UNSET:-}y"}, environ={}) == {"a": "xy"}


def test_interpolation_is_not_recursive() -> None:
    # A value that looks like a reference is taken literally, not expanded again.
    assert interpolate("${A}", environ={"A": "${B}", "B": "no"}) == "${B}"


def test_interpolation_leaves_keys_and_non_strings_alone() -> None:
    tree = {"${KEY}": [1, True, None, "${V}"]}
    assert interpolate(tree, environ={"KEY": "k", "V": "v"}) == {"${KEY}": [1, True, None, "v"]}


def test_interpolation_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_TEST_REGION", "sa-east-1")
    path = tmp_path / "gateway.yaml"
    path.write_text("region: ${GATEWAY_TEST_REGION}\n")
    assert load_config(path).region == "sa-east-1"


def test_interpolation_uses_the_given_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # load_config(environ=...) is the whole environment, for ${VARS} as for GATEWAY_*.
    monkeypatch.setenv("GATEWAY_TEST_REGION", "from-process")
    config = load(tmp_path, "region: ${GATEWAY_TEST_REGION}\n", {"GATEWAY_TEST_REGION": "given"})
    assert config.region == "given"


def test_missing_environment_variable_names_the_yaml_path(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        credentials:
          - access_key: reader
            secret_key: ${READER_SECRET_KEY}
        """,
    )
    assert message == "credentials.0.secret_key: environment variable READER_SECRET_KEY is not set"


def test_missing_environment_variable_in_a_nested_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "database:\n  url: postgresql://u:${PGPASS}@h/db\n")
    assert message == "database.url: environment variable PGPASS is not set"


# --- validation errors name the path --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("lisen: 127.0.0.1:9000\n", "lisen"),
        ("limits: {max_objet_size: 1}\n", "limits.max_objet_size"),
        ("buckets: {photos: {public: true}}\n", "buckets.photos.public"),
        (
            "credentials: [{access_key: abc, secret_key: abcdefgh, grants: {}}]\n",
            "credentials.0.grants",
        ),
        ("storage_profiles: {default: {path: x, bucket: y}}\n", "storage_profiles.default.bucket"),
        (
            "buckets: {site: {website: {routing_rules: []}}}\n",
            "buckets.site.website.routing_rules",
        ),
    ],
)
def test_unknown_keys_are_rejected_by_path(tmp_path: Path, text: str, path: str) -> None:
    assert load_error(tmp_path, text) == f"{path}: Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("buckets: {photos: {public_read: maybe}}\n", "buckets.photos.public_read"),
        ("buckets: {photos: {versioning: sometimes}}\n", "buckets.photos.versioning"),
        ("buckets: {logs: {lifecycle: [{expiration_days: 0}]}}\n", "buckets.logs.lifecycle"),
        ("buckets: {logs: {lifecycle: [{prefix: tmp/}]}}\n", "buckets.logs.lifecycle"),
        (
            "buckets: {logs: {lifecycle: [{expiration_days: 1, transition_days: 3}]}}\n",
            "buckets.logs.lifecycle.0.transition_days",
        ),
        ("database: {pool_max_size: lots}\n", "database.pool_max_size"),
        ("database: {pool_min_size: 0}\n", "database.pool_min_size"),
        ("limits: {clock_skew_seconds: -5}\n", "limits.clock_skew_seconds"),
        ("base_domains: s3.example.com\n", "base_domains"),
        ("website_domains: web.example.com\n", "website_domains"),
        ("buckets: {site: {website: {index_document: a/b.html}}}\n", "buckets.site.website"),
        ("buckets: {site: {website: {index_document: ''}}}\n", "buckets.site.website"),
        ("buckets: {site: {website: {error_document: ''}}}\n", "buckets.site.website"),
        ("storage_profiles: {default: {type: s3}}\n", "storage_profiles.default.type"),
        (
            "credentials: [{access_key: abc, secret_key: abcdefgh, buckets: {x: all}}]\n",
            "credentials.0.buckets.x",
        ),
        ("credentials: [{access_key: abc}]\n", "credentials.0.secret_key"),
        ("tls: {certificate: cert.pem}\n", "tls.private_key"),
    ],
)
def test_wrong_values_are_rejected_by_path(tmp_path: Path, text: str, path: str) -> None:
    assert load_error(tmp_path, text).startswith(f"{path}: ")


def test_website_settings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        website_domains: [Web.Example.COM.]
        buckets:
          site: {website: {error_document: errors/404.html}}
          plain: {}
        """,
    )
    assert config.website_domains == ["web.example.com"]
    website = config.buckets["site"].website
    assert website is not None
    assert website.configuration() == WebsiteConfiguration("index.html", "errors/404.html")
    assert config.buckets["plain"].website is None


def test_every_error_is_reported(tmp_path: Path) -> None:
    message = load_error(tmp_path, "region: 5\nbuckets: {photos: {public_read: maybe}}\n")
    assert message.startswith("region: ")
    assert "; buckets.photos.public_read: " in message


def test_errors_do_not_echo_secrets(tmp_path: Path) -> None:
    message = load_error(tmp_path, "credentials: [{access_key: reader, secret_key: 'Sh0rt!'}]\n")
    assert message.startswith("credentials.0.secret_key: ")
    assert "Sh0rt!" not in message


def test_unknown_storage_profile(tmp_path: Path) -> None:
    message = load_error(tmp_path, "buckets: {photos: {profile: fast}}\n")
    assert message == "buckets.photos.profile: unknown storage profile 'fast'"
    message = load_error(tmp_path, "default_profile: fast\n")
    assert message == "default_profile: unknown storage profile 'fast'"


def test_buckets_without_a_profile_follow_default_profile(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        storage_profiles: {fast: {path: /ssd}, slow: {path: /hdd}}
        default_profile: fast
        buckets:
          photos: {public_read: true}
          archive: {profile: slow}
        """,
    )
    assert config.buckets["photos"].profile == "fast"
    assert config.buckets["archive"].profile == "slow"
    assert config.blob_root("fast") == Path("/ssd")


def test_duplicate_access_keys(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        credentials:
          - {access_key: one, secret_key: secret-one}
          - {access_key: two, secret_key: secret-two}
          - {access_key: one, secret_key: secret-three}
        """,
    )
    assert message == "credentials.2.access_key: duplicate 'one'"


def test_pool_min_may_not_exceed_max(tmp_path: Path) -> None:
    message = load_error(tmp_path, "database: {pool_min_size: 30}\n")
    assert message == "database: pool_min_size (30) exceeds pool_max_size (20)"


@pytest.mark.parametrize(
    "listen", ["nowhere", "9000", "host:", "host:0", "host:65536", "host:http", "host:-1"]
)
def test_bad_listen_address(tmp_path: Path, listen: str) -> None:
    assert load_error(tmp_path, f"listen: '{listen}'\n") == (
        f"listen: expected host:port, got {listen!r}"
    )


@pytest.mark.parametrize(
    ("listen", "host_port"),
    [
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9000", ("::1", 9000)),
        (":9000", ("127.0.0.1", 9000)),
        ("gateway.internal:65535", ("gateway.internal", 65535)),
    ],
)
def test_listen_address(tmp_path: Path, listen: str, host_port: tuple[str, int]) -> None:
    assert load(tmp_path, f"listen: '{listen}'\n").host_port == host_port


def test_invalid_yaml_and_wrong_top_level(tmp_path: Path) -> None:
    assert "invalid YAML" in load_error(tmp_path, "listen: [unclosed\n")
    assert load_error(tmp_path, "- a list\n").endswith(": the top level must be a mapping")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_config(tmp_path / "absent.yaml", {})


# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("512B", 512),
        ("64KiB", 64 * 1024),
        ("64MiB", 64 * 1024**2),
        ("64 mib", 64 * 1024**2),
        ("5GiB", 5 * 1024**3),
        ("2TiB", 2 * 1024**4),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["64MB", "64M", "1.5GiB", "lots", "", True, 1.5])
def test_parse_size_rejects(value: object) -> None:
    # Decimal units (MB) would be ambiguous with MiB, so only binary units are accepted.
    with pytest.raises(ValueError, match="not a size"):
        parse_size(value)


def test_sizes_in_limits(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        limits:
          max_object_size: 64MiB
          max_xml_body: 512 KiB
          max_metadata_size: 4096
        """,
    )
    assert config.limits.max_object_size == 64 * 1024**2
    assert config.limits.max_xml_body == 512 * 1024
    assert config.limits.max_metadata_size == 4096


def test_bad_size_names_the_limit(tmp_path: Path) -> None:
    message = load_error(tmp_path, "limits: {max_xml_body: 1MB}\n")
    assert message == "limits.max_xml_body: not a size: '1MB' (use e.g. 1024, 64KiB, 5GiB)"
    message = load_error(tmp_path, "limits: {max_object_size: -1}\n")
    assert message.startswith("limits.max_object_size: ")


# --- config.example.yaml --------------------------------------------------------------------


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= _field_names(candidate)
    return names


def test_example_documents_every_option() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    names = _field_names(GatewayConfig)
    assert {"certificate", "secret_key", "public_read", "max_xml_body"} <= names
    missing = sorted(name for name in names if f"{name}:" not in text)
    assert missing == []


def test_example_loads() -> None:
    config = load_config(EXAMPLE, EXAMPLE_ENV)
    assert config.tls is None
    assert config.database.url is None
    assert any(bucket.public_read for bucket in config.buckets.values())
    reader = next(c for c in config.credentials if c.access_key == "reader")
    assert reader.secret_key == EXAMPLE_ENV["READER_SECRET_KEY"]
    assert reader.buckets and all(grant == "read" for grant in reader.buckets.values())
    assert all(reader.can_read(b) and not reader.can_write(b) for b in reader.buckets)


def test_example_tls_block_is_valid_when_uncommented(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# tls:")
    end = start + 1
    while lines[end].startswith("#   "):
        end += 1
    lines[start:end] = [line[2:] for line in lines[start:end]]
    path = tmp_path / "tls.yaml"
    path.write_text("\n".join(lines), encoding="utf-8")
    config = load_config(path, EXAMPLE_ENV)
    assert config.tls is not None
    assert config.tls.certificate.name == "fullchain.pem"


def check_config(
    path: Path, extra_env: dict[str, str], arguments: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`gateway check-config` of ``path`` (``arguments``: how it is given; positional by
    default)."""
    # The child sees no GATEWAY_* settings of whoever runs the tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra_env)
    for name in EXAMPLE_ENV:
        if name not in extra_env:
            env.pop(name, None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "check-config",
            *([str(path)] if arguments is None else arguments),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_accepts_the_example() -> None:
    result = check_config(EXAMPLE, EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{EXAMPLE}: ok"


def test_check_config_takes_the_file_as_the_other_commands_do() -> None:
    by_option = check_config(EXAMPLE, EXAMPLE_ENV, ["--config", str(EXAMPLE)])
    by_environment = check_config(EXAMPLE, {**EXAMPLE_ENV, "GATEWAY_CONFIG": str(EXAMPLE)}, [])
    for result in (by_option, by_environment):
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{EXAMPLE}: ok"
    neither = check_config(EXAMPLE, {}, [])
    assert neither.returncode == 2
    assert "check-config needs a file" in neither.stderr


def test_check_config_needs_the_example_secrets() -> None:
    result = check_config(EXAMPLE, {})
    assert result.returncode != 0
    assert "credentials.0.secret_key: environment variable READER_SECRET_KEY is not set" in (
        result.stderr
    )


def test_check_config_rejects_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("buckets:\n  photos:\n    public_read: maybe\n", encoding="utf-8")
    result = check_config(path, {})
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}: buckets.photos.public_read: ")


def test_check_config_names_the_path_of_a_bad_variant_option(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "variants:\n  thumb:\n    width: 320\n    quality: {webp: 75, avif: 500}\n",
        encoding="utf-8",
    )
    result = check_config(path, {})
    assert result.returncode != 0
    assert result.stderr.startswith(f"{path}: variants.thumb.quality.avif: ")


# --- the root credential --------------------------------------------------------------------


def test_root_credential_is_generated_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"  # created on demand
    first = root_credential(data_dir, {})
    path = data_dir / ROOT_CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "access_key": first.access_key,
        "secret_key": first.secret_key,
    }
    assert first.root
    printed = capsys.readouterr().out
    assert first.access_key in printed and first.secret_key in printed

    second = root_credential(data_dir, {})
    assert (second.access_key, second.secret_key) == (first.access_key, first.secret_key)
    assert second.root
    assert capsys.readouterr().out == ""  # printed once, on the first start only


def test_root_credential_from_the_environment(tmp_path: Path) -> None:
    environ = {"GATEWAY_ROOT_ACCESS_KEY": "ROOTKEY", "GATEWAY_ROOT_SECRET_KEY": "root-secret"}
    credential = root_credential(tmp_path, environ)
    assert (credential.access_key, credential.secret_key, credential.root) == (
        "ROOTKEY",
        "root-secret",
        True,
    )
    assert list(tmp_path.iterdir()) == []


def test_root_credential_needs_both_variables(tmp_path: Path) -> None:
    credential = root_credential(tmp_path, {"GATEWAY_ROOT_ACCESS_KEY": "ROOTKEY"})
    assert credential.access_key != "ROOTKEY"
    assert (tmp_path / ROOT_CREDENTIALS_FILE).exists()


UPSTREAM = """
storage_profiles:
  default: {path: blobs}
  media:
    type: upstream
    endpoint_url: http://127.0.0.1:9999
    bucket: media-bucket
    access_key: ${KEY_ID}
    secret_key: ${SECRET}
    part_size: 16MiB
"""


def test_upstream_profile(tmp_path: Path) -> None:
    config = load(tmp_path, UPSTREAM, {"KEY_ID": "AKIAEXAMPLE", "SECRET": "very-secret-value"})
    profile = config.storage_profiles["media"]
    assert isinstance(profile, UpstreamProfile)
    assert profile.part_size == 16 * 1024**2
    assert profile.key_prefix("photos") == "photos/"
    assert isinstance(config.storage_profiles["default"], LocalProfile)
    # Secrets never show in a repr (logs, tracebacks).
    assert "very-secret-value" not in repr(config)
    assert "AKIAEXAMPLE" not in repr(config)


def test_upstream_credentials_come_in_pairs(tmp_path: Path) -> None:
    text = UPSTREAM.replace("    secret_key: ${SECRET}\n", "")
    message = load_error(tmp_path, text, {"KEY_ID": "AKIAEXAMPLE"})
    assert message.startswith("storage_profiles.media:")
    assert "both access_key and secret_key" in message


def test_empty_upstream_credentials_mean_the_aws_chain(tmp_path: Path) -> None:
    config = load(tmp_path, UPSTREAM, {"KEY_ID": "", "SECRET": ""})
    profile = config.storage_profiles["media"]
    assert isinstance(profile, UpstreamProfile)
    assert profile.access_key is None and profile.secret_key is None


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("default_profile: media\n", "default_profile"),
        (
            "buckets: {alpha: {profile: media}, beta: {profile: media}}\n",
            "storage_profiles.media.prefix",
        ),
    ],
)
def test_a_prefix_without_bucket_holds_one_bucket(tmp_path: Path, extra: str, path: str) -> None:
    text = UPSTREAM.replace("    part_size: 16MiB\n", '    prefix: "shared/"\n') + extra
    message = load_error(tmp_path, text, {"KEY_ID": "k", "SECRET": "s"})
    assert message.startswith(f"{path}:")
    # One bucket on it is fine.
    single = UPSTREAM.replace("    part_size: 16MiB\n", '    prefix: ""\n')
    load(tmp_path, single + "buckets: {alpha: {profile: media}}\n", {"KEY_ID": "k", "SECRET": "s"})


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ("    part_size: 1MiB\n", "storage_profiles.media.part_size"),
        ("    max_attempts: 0\n", "storage_profiles.media.max_attempts"),
        ('    prefix: "{bucket}/{bucket}/"\n', "storage_profiles.media"),
        # Bucket "logs" key "-old/x" and bucket "logs-old" key "/x" would meet.
        ('    prefix: "{bucket}"\n', "storage_profiles.media"),
        ("    addressing_style: sideways\n", "storage_profiles.media.addressing_style"),
    ],
)
def test_bad_upstream_settings_name_their_path(tmp_path: Path, line: str, path: str) -> None:
    text = UPSTREAM.replace("    part_size: 16MiB\n", line)
    message = load_error(tmp_path, text, {"KEY_ID": "k", "SECRET": "s"})
    assert message.startswith(f"{path}:"), message


def test_chunking_settings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        storage_profiles:
          default: {chunking: {chunk_size: 64KiB, dedup: true}}
          plain: {path: plain}
        """,
    )
    default = config.storage_profiles["default"]
    assert default.chunking is not None
    assert (default.chunking.chunk_size, default.chunking.dedup) == (64 * 1024, True)
    assert config.storage_profiles["plain"].chunking is None
    upstream = load(tmp_path, UPSTREAM + "    chunking: {}\n", {"KEY_ID": "k", "SECRET": "s"})
    assert upstream.storage_profiles["media"].chunking == ChunkingConfig()


@pytest.mark.parametrize("size", ["32KiB", "1GiB", "lots"])
def test_chunk_size_out_of_range_names_its_path(tmp_path: Path, size: str) -> None:
    message = load_error(
        tmp_path, f"storage_profiles: {{default: {{chunking: {{chunk_size: {size}}}}}}}"
    )
    assert message.startswith("storage_profiles.default.chunking.chunk_size:"), message


def test_yaml_errors_name_file_line_and_column_once(tmp_path: Path) -> None:
    message = load_error(tmp_path, "listen: 127.0.0.1:9000\nbuckets:\n  a: [unclosed\n")
    path = str(tmp_path / "gateway.yaml")
    assert message == f"{path}:4:1: invalid YAML: expected ',' or ']', but got '<stream end>'"


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    message = load_error(tmp_path, "region: eu-west-1\nlisten: 127.0.0.1:9000\nregion: us-east-1\n")
    assert message.endswith(":3:1: invalid YAML: duplicate key 'region'")
    nested = load_error(tmp_path, "buckets:\n  photos: {}\n  photos: {}\n")
    assert nested.endswith(":3:3: invalid YAML: duplicate key 'photos'")


def test_unterminated_environment_reference_names_the_path(tmp_path: Path) -> None:
    message = load_error(tmp_path, "database:\n  url: postgresql://u:${PASSWORD@db/gateway\n")
    assert message == "database.url: '${' begins no ${VAR} or ${VAR:-default} reference"


@pytest.mark.parametrize("name", ["Photos", "ab", "my_bucket", "-photos", "photos..old"])
def test_invalid_bucket_names_in_buckets_are_errors(tmp_path: Path, name: str) -> None:
    message = load_error(tmp_path, f"buckets:\n  '{name}': {{}}\n")
    assert f"buckets.{name}: not a valid bucket name" in message


def test_a_literal_metrics_token_is_warned_about(tmp_path: Path) -> None:
    load(tmp_path, "metrics:\n  token: ${METRICS_TOKEN}\n", {"METRICS_TOKEN": "t" * 32})
    assert literal_secrets(tmp_path / "gateway.yaml") == []
    load(tmp_path, "metrics:\n  token: written-here-in-the-file\n")
    assert literal_secrets(tmp_path / "gateway.yaml") == ["metrics.token"]


def test_access_keys_encryption_key(tmp_path: Path) -> None:
    key = "ab" * 32
    config = load(tmp_path, "access_keys:\n  encryption_key: ${KEYS_KEY}\n", {"KEYS_KEY": key})
    assert config.access_keys.encryption_key == bytes.fromhex(key)
    assert key not in repr(config)
    assert literal_secrets(tmp_path / "gateway.yaml") == []
    unset = load(tmp_path, "access_keys: {encryption_key: '${KEYS_KEY:-}'}", {})
    assert unset.access_keys.encryption_key is None
    literal = load(tmp_path, f"access_keys: {{encryption_key: '{key}'}}")
    assert literal.access_keys.encryption_key == bytes.fromhex(key)
    assert literal_secrets(tmp_path / "gateway.yaml") == ["access_keys.encryption_key"]
    with pytest.raises(ConfigError, match=r"access_keys\.encryption_key: a key must be 32") as exc:
        load(tmp_path, "access_keys:\n  encryption_key: ${KEYS_KEY}\n", {"KEYS_KEY": "ab" * 16})
    assert "ab" * 16 not in str(exc.value)


# --- log, metrics, trusted proxies ------------------------------------------------------------


def test_log_and_metrics_defaults() -> None:
    config = load_config(None, {})
    assert (config.log.level, config.log.format) == ("INFO", "json")
    assert config.metrics.enabled and config.metrics.token is None
    assert config.metrics.allow_networks == [] and config.trusted_proxies == []


def test_log_metrics_and_proxies_are_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        log: {level: debug, format: text}
        metrics: {token: "${TOKEN}", allow_networks: ["10.0.0.0/8", "::1"]}
        trusted_proxies: [192.168.1.1, "fd00::/8"]
        """,
        {"TOKEN": "t0ken-value"},
    )
    assert (config.log.level, config.log.format) == ("DEBUG", "text")
    assert config.metrics.token == "t0ken-value"
    assert [str(n) for n in config.metrics.allow_networks] == ["10.0.0.0/8", "::1/128"]
    assert [str(n) for n in config.trusted_proxies] == ["192.168.1.1/32", "fd00::/8"]


def test_an_empty_metrics_token_is_no_token(tmp_path: Path) -> None:
    config = load(tmp_path, "metrics: {token: '${TOKEN:-}'}\n")
    assert config.metrics.token is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log: {level: LOUD}\n", "log.level: unknown log level 'LOUD'"),
        ("log: {format: xml}\n", "log.format"),
        ("metrics: {allow_networks: [not-a-net]}\n", "metrics.allow_networks: not a network"),
        ("trusted_proxies: [10.0.0.0/33]\n", "trusted_proxies: not a network"),
    ],
)
def test_bad_log_and_metrics_settings_name_their_path(
    tmp_path: Path, text: str, message: str
) -> None:
    assert message in load_error(tmp_path, text)
