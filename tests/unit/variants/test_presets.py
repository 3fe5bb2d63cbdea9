"""Presets: the spec hash, variant keys, Accept negotiation, bucket allow-lists, config checks."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import get_args

import pytest

from gateway.config import (
    ConfigError,
    FrameConfig,
    GatewayConfig,
    QualityConfig,
    VariantPresetConfig,
    load_config,
)
from gateway.s3.errors import InvalidArgument
from gateway.variants.gravity import Gravity
from gateway.variants.info import InfoSpec
from gateway.variants.presets import Preset, PresetCatalog, negotiate, spec_hash
from gateway.variants.render import FrameSpec, RenderSpec

THUMB = VariantPresetConfig(width=320, height=320, fit="cover", format="webp", quality=80)


def preset(**changes: object) -> Preset:
    # Validated, as YAML is: a number for quality becomes a quality per format.
    config = VariantPresetConfig.model_validate({**THUMB.model_dump(), **changes})
    return Preset.from_config("thumb", config)


def load(tmp_path: Path, text: str) -> GatewayConfig:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_config(path, {})


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text)
    return str(excinfo.value)


# --- the spec hash and variant keys ---------------------------------------------------------


def test_spec_hash_is_stable() -> None:
    # Pinned: an accidental change here would silently re-render every derivative.
    spec = RenderSpec(width=320, height=320, fit="cover", format="webp", quality=80)
    assert spec_hash(spec) == preset().spec_hash
    # sha256 of {"background":null,"fit":"cover","height":320,"quality":80,"renderer":1,
    # "width":320}, first 16 hex digits.
    assert spec_hash(spec) == "145c3fb27757adbd"


@pytest.mark.parametrize(
    "change",
    [
        {"width": 321},
        {"height": 200},
        {"fit": "contain"},
        {"quality": 81},
        {"background": "#000000"},
        {"gravity": "north"},
        {"gravity": "attention"},
    ],
)
def test_what_shapes_pixels_changes_the_hash(change: dict[str, object]) -> None:
    assert preset(**change).spec_hash != preset().spec_hash


@pytest.mark.parametrize(
    "change",
    [
        {"cache_control": "max-age=60"},
        {"on_miss": "original"},
        {"eager": True},
        # The format is in the key apart from the hash.
        {"format": "auto"},
        {"format": "jpeg"},
    ],
)
def test_what_shapes_only_the_response_keeps_the_hash(change: dict[str, object]) -> None:
    assert preset(**change).spec_hash == preset().spec_hash


GRAVITIES = get_args(Gravity)


def test_each_gravity_is_a_spec_of_its_own() -> None:
    hashes = {preset(gravity=gravity).spec_hash for gravity in GRAVITIES}
    assert len(hashes) == len(GRAVITIES)
    # centre is the crop presets made before gravity existed: their derivatives stand.
    assert preset(gravity="centre").spec_hash == "145c3fb27757adbd"


def test_center_is_centre(tmp_path: Path) -> None:
    config = load(tmp_path, "variants: {a: {width: 9, height: 9, fit: cover, gravity: center}}\n")
    assert config.variants["a"].gravity == "centre"


def test_info_is_built_in_and_allowed_like_a_preset(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        variants: {thumb: {width: 9}}
        buckets: {photos: {variants: ["*"]}, pages: {variants: [info]}, backups: {}}
        """,
    )
    catalog = PresetCatalog.from_config(config)
    info = catalog.resolve("pages", "info")
    assert info.spec == InfoSpec()
    assert info.format_class("image/avif", avif=True) == "json"
    assert info.render_spec("json") == InfoSpec()
    assert info.variant_key("json") == f"info:json:{info.spec_hash}"
    assert not info.negotiated and not info.eager
    assert catalog.resolve("photos", "info") == info
    with pytest.raises(InvalidArgument):
        catalog.resolve("backups", "info")
    with pytest.raises(InvalidArgument):
        catalog.resolve("pages", "thumb")
    assert info.spec_hash not in {preset(gravity=gravity).spec_hash for gravity in GRAVITIES}


def test_only_info_is_no_configured_preset(tmp_path: Path) -> None:
    catalog = PresetCatalog.from_config(load(tmp_path, "buckets: {pages: {variants: [info]}}\n"))
    assert not catalog.configured
    assert catalog.resolve("pages", "info").name == "info"


@pytest.mark.parametrize(
    ("at", "spec"),
    [
        (None, FrameSpec()),
        ("1s", FrameSpec(seconds=1.0)),
        ("2.5s", FrameSpec(seconds=2.5)),
        (3, FrameSpec(seconds=3.0)),
        (0.5, FrameSpec(seconds=0.5)),
        ("10%", FrameSpec(percent=10.0)),
        ("100%", FrameSpec(percent=100.0)),
    ],
)
def test_frame_positions(at: object, spec: FrameSpec) -> None:
    poster = Preset.from_config("poster", THUMB.model_copy(update={"frame": FrameConfig(at=at)}))
    assert poster.spec.frame == spec


def test_the_frame_shapes_the_hash() -> None:
    def poster(at: str | None) -> Preset:
        return preset(frame=FrameConfig(at=at))

    hashes = {preset().spec_hash, poster(None).spec_hash, poster("1s").spec_hash}
    hashes |= {poster("2s").spec_hash, poster("1%").spec_hash}
    assert len(hashes) == 5


def test_variant_key_names_preset_format_and_spec() -> None:
    thumb = preset()
    assert thumb.variant_key("webp") == f"thumb:webp:{thumb.spec_hash}"
    assert preset(width=100).variant_key("webp") != thumb.variant_key("webp")
    assert thumb.variant_key("avif") != thumb.variant_key("webp")


def test_render_spec_per_format_class() -> None:
    auto = preset(format="auto", background="#102030")
    assert auto.negotiated
    assert auto.render_spec("avif").format == "avif"
    assert auto.render_spec("legacy").format == "legacy"
    assert auto.render_spec("webp").background == (0x10, 0x20, 0x30)
    assert not preset().negotiated


def test_format_class() -> None:
    assert preset().format_class("image/avif,image/webp", avif=True) == "webp"
    auto = preset(format="auto")
    assert auto.format_class("image/avif,image/webp", avif=True) == "avif"
    assert auto.format_class("image/avif,image/webp", avif=False) == "webp"
    assert auto.format_classes(avif=True) == ("avif", "webp", "legacy")
    assert auto.format_classes(avif=False) == ("webp", "legacy")
    assert preset().format_classes(avif=True) == ("webp",)


# --- Accept -> format class -----------------------------------------------------------------

CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI_16 = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8"
FIREFOX_OLD = "image/webp,*/*"
CURL = "*/*"


@pytest.mark.parametrize(
    ("accept", "avif", "expected"),
    [
        (CHROME, True, "avif"),
        (CHROME, False, "webp"),
        (SAFARI_16, True, "avif"),
        (FIREFOX_OLD, True, "webp"),
        (CURL, True, "legacy"),
        (None, True, "legacy"),
        ("", True, "legacy"),
        ("image/*", True, "legacy"),  # a wildcard does not promise AVIF or WebP
        ("text/html", True, "legacy"),
        ("IMAGE/AVIF", True, "avif"),  # media types are case-insensitive
        (" image/webp ; q=0.5 , image/avif;q=0.4", True, "webp"),  # the higher q wins
        ("image/webp;q=0.5,image/avif;q=0.5", True, "avif"),  # AVIF on a tie
        ("image/avif;q=0,image/webp", True, "webp"),  # q=0: not acceptable
        ("image/avif;q=0", True, "legacy"),
        ("image/webp;q=0.000", True, "legacy"),
        ("image/webp;q=bogus", True, "legacy"),
        ("image/avif;level=1;q=0.9", True, "avif"),
        ("image/webp;Q=0", True, "legacy"),
        ("image/webp,image/webp;q=0", True, "webp"),  # the first mention stands
    ],
)
def test_negotiate(accept: str | None, avif: bool, expected: str) -> None:
    assert negotiate(accept, avif) == expected


# --- the catalog ----------------------------------------------------------------------------

CATALOG_YAML = """\
variants:
  thumb: {width: 320, height: 320, fit: cover, format: webp, eager: true}
  preview: {width: 1280, format: auto}
  banner: {width: 1200, height: 400, fit: cover, format: jpeg, eager: true}
buckets:
  photos: {variants: ["*"]}
  assets: {variants: [thumb]}
  backups: {}
"""


def test_catalog_resolves_allowed_presets(tmp_path: Path) -> None:
    catalog = PresetCatalog.from_config(load(tmp_path, CATALOG_YAML))
    assert catalog.configured
    assert catalog.resolve("photos", "preview").name == "preview"
    assert catalog.resolve("photos", "banner").format == "jpeg"
    assert catalog.resolve("assets", "thumb").spec.width == 320


@pytest.mark.parametrize(
    ("bucket", "name", "message"),
    [
        ("photos", "huge", "There is no variant preset named 'huge'."),
        ("assets", "preview", "The variant preset 'preview' is not enabled for bucket 'assets'."),
        ("backups", "thumb", "The variant preset 'thumb' is not enabled for bucket 'backups'."),
        # Buckets created through the API allow none.
        ("elsewhere", "thumb", "The variant preset 'thumb' is not enabled for bucket"),
    ],
)
def test_catalog_refuses(tmp_path: Path, bucket: str, name: str, message: str) -> None:
    catalog = PresetCatalog.from_config(load(tmp_path, CATALOG_YAML))
    with pytest.raises(InvalidArgument) as excinfo:
        catalog.resolve(bucket, name)
    assert excinfo.value.message.startswith(message)
    assert excinfo.value.status == 400
    assert excinfo.value.extra == {"ArgumentName": "variant", "ArgumentValue": name}


def test_catalog_eager_presets(tmp_path: Path) -> None:
    catalog = PresetCatalog.from_config(load(tmp_path, CATALOG_YAML))
    assert [p.name for p in catalog.eager("photos")] == ["banner", "thumb"]
    assert [p.name for p in catalog.eager("assets")] == ["thumb"]
    assert catalog.eager("backups") == []
    assert catalog.eager("elsewhere") == []


def test_catalog_eager_preset_by_name(tmp_path: Path) -> None:
    catalog = PresetCatalog.from_config(load(tmp_path, CATALOG_YAML))
    assert catalog.any_eager
    assert catalog.eager_preset("photos", "banner") is catalog.resolve("photos", "banner")
    # Not eager, not allowed there, or gone from the configuration: nothing to make.
    assert catalog.eager_preset("photos", "preview") is None
    assert catalog.eager_preset("assets", "banner") is None
    assert catalog.eager_preset("photos", "gone") is None


def test_undeclared_buckets_follow_default_bucket_variants(tmp_path: Path) -> None:
    text = CATALOG_YAML + "default_bucket_variants: [preview, banner]\n"
    catalog = PresetCatalog.from_config(load(tmp_path, text))
    assert catalog.resolve("made-by-create-bucket", "preview").name == "preview"
    assert [p.name for p in catalog.eager("made-by-create-bucket")] == ["banner"]
    # A declared bucket keeps its own list.
    with pytest.raises(InvalidArgument):
        catalog.resolve("assets", "preview")
    everything = PresetCatalog.from_config(
        load(tmp_path, CATALOG_YAML + "default_bucket_variants: ['*']\n")
    )
    assert everything.resolve("elsewhere", "thumb").name == "thumb"


# --- configuration --------------------------------------------------------------------------


def test_preset_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "variants: {preview: {width: 1280}}\n")
    preview = config.variants["preview"]
    assert (preview.fit, preview.format) == ("inside", "auto")
    assert preview.quality == QualityConfig(jpeg=80, webp=80, avif=80)
    assert (preview.animation, preview.max_frames, preview.densities) == ("first_frame", 200, [1])
    assert (preview.strip_metadata, preview.progressive, preview.avif_speed) == (True, True, 8)
    assert (preview.on_miss, preview.eager, preview.cache_control) == ("wait", False, None)
    assert config.buckets == {}


def test_variant_limits(tmp_path: Path) -> None:
    config = load(tmp_path, "limits: {max_source_bytes: 8MiB, render_queue: 0}\n")
    assert config.limits.max_source_bytes == 8 * 1024**2
    assert config.limits.render_queue == 0
    assert config.limits.render_workers is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "variants: {thumb: {width: 320, fit: cover}}\n",
            "variants.thumb: fit cover needs both a width and a height",
        ),
        (
            "variants: {thumb: {fit: inside}}\n",
            "variants.thumb: fit inside needs a width, a height or both",
        ),
        ("variants: {thumb: {width: 0}}\n", "variants.thumb.width: "),
        ("variants: {thumb: {width: 9000}}\n", "variants.thumb.width: "),
        ("variants: {thumb: {width: 9, quality: 101}}\n", "variants.thumb.quality: "),
        ("variants: {thumb: {width: 9, format: gif}}\n", "variants.thumb.format: "),
        ("variants: {thumb: {width: 9, fit: crop}}\n", "variants.thumb.fit: "),
        ("variants: {thumb: {width: 9, on_miss: fail}}\n", "variants.thumb.on_miss: "),
        (
            "variants: {thumb: {width: 9, height: 9, fit: cover, gravity: up}}\n",
            "variants.thumb.gravity: ",
        ),
        (
            "variants: {thumb: {width: 9, height: 9, fit: contain, gravity: north}}\n",
            "variants.thumb: gravity north applies to fit cover only, not contain",
        ),
        ("variants: {thumb: {width: 9, gravity: entropy}}\n", "variants.thumb: gravity entropy"),
        ("variants: {info: {width: 9}}\n", "variants: 'info' is the built-in source info"),
        ("variants: {thumb: {width: 9, size: 3}}\n", "variants.thumb.size: "),
        (
            "variants: {thumb: {width: 9, background: white}}\n",
            "variants.thumb.background: expected a colour as #rrggbb, got 'white'",
        ),
        ("variants: {'a b': {width: 9}}\n", "variants: 'a b': a preset name is"),
        (
            "variants: {thumb: {width: 9}}\nbuckets: {photos: {variants: [thumb, big]}}\n",
            "buckets.photos.variants.1: unknown variant preset 'big'",
        ),
        ("buckets: {photos: {variants: thumb}}\n", "buckets.photos.variants: "),
        (
            "variants: {thumb: {width: 9}}\ndefault_bucket_variants: [thumb, big]\n",
            "default_bucket_variants.1: unknown variant preset 'big'",
        ),
        ("variants: {t: {width: 9, quality: 0}}\n", "variants.t.quality: expected 1-100, got 0"),
        ("variants: {t: {width: 9, quality: {avif: 0}}}\n", "variants.t.quality.avif: "),
        ("variants: {t: {width: 9, quality: {png: 6}}}\n", "variants.t.quality.png: "),
        ("variants: {t: {width: 9, quality: high}}\n", "variants.t.quality: expected a number"),
        ("variants: {t: {width: 9, quality: true}}\n", "variants.t.quality: expected a number"),
        ("variants: {t: {width: 9, strip_metadata: maybe}}\n", "variants.t.strip_metadata: "),
        ("variants: {t: {width: 9, progressive: sometimes}}\n", "variants.t.progressive: "),
        ("variants: {t: {width: 9, avif_speed: 11}}\n", "variants.t.avif_speed: "),
        ("variants: {t: {width: 9, animation: all}}\n", "variants.t.animation: "),
        ("variants: {t: {width: 9, max_frames: 1}}\n", "variants.t.max_frames: "),
        ("variants: {t: {width: 9, densities: [1, 5]}}\n", "variants.t.densities.1: "),
        ("variants: {t: {width: 9, densities: 2}}\n", "variants.t.densities: "),
        ("variants: {t: {width: 9, upscale: 2x}}\n", "variants.t.upscale: "),
        (
            "variants: {t: {width: 9, densities: [2, 2]}}\n",
            "variants.t: densities: [2, 2] lists a density twice",
        ),
        (
            "variants: {t: {width: 3000, densities: [1, 3]}}\n",
            "variants.t: densities: width 3000 x 3 is more than 8192 pixels",
        ),
        ("limits: {max_source_bytes: lots}\n", "limits.max_source_bytes: not a size"),
        ("limits: {render_timeout_seconds: 0}\n", "limits.render_timeout_seconds: "),
        ("limits: {render_workers: 0}\n", "limits.render_workers: "),
        (
            "variants: {p: {width: 9, frame: {at: 2m}}}\n",
            "variants.p.frame.at: expected seconds (1s, 2.5s) or a percentage (10%), got '2m'",
        ),
        (
            "variants: {p: {width: 9, frame: {at: 101%}}}\n",
            "variants.p.frame.at: a percentage is at most 100%",
        ),
        ("variants: {p: {width: 9, frame: {at: -1s}}}\n", "variants.p.frame.at: "),
        ("variants: {p: {width: 9, frame: {when: 1s}}}\n", "variants.p.frame.when: "),
        ("variants: {p: {width: 9, frame: 1s}}\n", "variants.p.frame: "),
        ("limits: {video_source_max_bytes: lots}\n", "limits.video_source_max_bytes: "),
        ("limits: {video_max_seek_seconds: 0}\n", "limits.video_max_seek_seconds: "),
        ("limits: {video_probe_bytes: 1KiB}\n", "limits.video_probe_bytes: "),
        ("limits: {video_probe_seconds: 0}\n", "limits.video_probe_seconds: "),
        ("limits: {video_memory_bytes: 1MiB}\n", "limits.video_memory_bytes: "),
        ("video: {ffmpg: /usr/bin/ffmpeg}\n", "video.ffmpg: "),
    ],
)
def test_bad_presets_are_rejected_by_path(tmp_path: Path, text: str, message: str) -> None:
    assert load_error(tmp_path, text).startswith(message)


# --- densities and the options added to the spec --------------------------------------------

DENSITY_YAML = """\
variants:
  thumb: {width: 320, height: 320, fit: cover, format: webp, densities: [1, 2, 3], eager: true}
  plain: {width: 100, format: webp}
buckets:
  photos: {variants: [thumb, plain]}
  assets: {variants: [plain]}
"""


def test_densities_are_variants_of_their_own(tmp_path: Path) -> None:
    catalog = PresetCatalog.from_config(load(tmp_path, DENSITY_YAML))
    thumb = catalog.resolve("photos", "thumb")
    double = catalog.resolve("photos", "thumb@2x")
    assert (double.name, double.base, double.spec.density) == ("thumb@2x", "thumb", 2)
    assert double.variant_key("webp") == f"thumb@2x:webp:{double.spec_hash}"
    assert double.spec_hash != thumb.spec_hash
    assert catalog.resolve("photos", "thumb@3x").spec_hash not in (
        thumb.spec_hash,
        double.spec_hash,
    )
    # @1x is the preset itself: the same variant.
    assert catalog.resolve("photos", "thumb@1x") == thumb
    assert [p.name for p in catalog.eager("photos")] == ["thumb", "thumb@2x", "thumb@3x"]
    assert catalog.eager_preset("photos", "thumb@3x") == catalog.resolve("photos", "thumb@3x")
    assert catalog.eager_preset("photos", "thumb@4x") is None


@pytest.mark.parametrize(
    ("bucket", "name", "message"),
    [
        ("photos", "thumb@4x", "There is no variant preset named 'thumb@4x'."),
        ("photos", "plain@2x", "There is no variant preset named 'plain@2x'."),
        ("photos", "thumb@02x", "There is no variant preset named 'thumb@02x'."),
        ("photos", "thumb@x", "There is no variant preset named 'thumb@x'."),
        ("assets", "thumb@2x", "The variant preset 'thumb' is not enabled for bucket 'assets'."),
    ],
)
def test_densities_refused(tmp_path: Path, bucket: str, name: str, message: str) -> None:
    catalog = PresetCatalog.from_config(load(tmp_path, DENSITY_YAML))
    with pytest.raises(InvalidArgument) as excinfo:
        catalog.resolve(bucket, name)
    assert excinfo.value.message == message


@pytest.mark.parametrize(
    "change",
    [
        {"quality": {"webp": 70}},
        {"strip_metadata": False},
        {"progressive": False},
        {"avif_speed": 4},
        {"animation": "keep"},
        {"max_frames": 50},
        {"upscale": True},
    ],
)
def test_new_options_change_the_hash(change: dict[str, object]) -> None:
    assert preset(**change).spec_hash != preset().spec_hash


def test_options_at_their_defaults_keep_the_hash() -> None:
    # A preset written before these options existed keeps its variants.
    same = preset(
        quality={"jpeg": 80, "webp": 80, "avif": 80},
        strip_metadata=True,
        progressive=True,
        avif_speed=8,
        animation="first_frame",
        max_frames=200,
        densities=[1],
        upscale=False,
    )
    assert same.spec_hash == preset().spec_hash == "145c3fb27757adbd"
    # Densities offered change no 1x variant.
    assert preset(densities=[1, 2]).spec_hash == preset().spec_hash


def test_quality_map() -> None:
    mapped = preset(quality={"avif": 50, "webp": 75, "jpeg": 82}).spec
    assert (mapped.quality_for("jpeg"), mapped.quality_for("webp")) == (82, 75)
    assert mapped.quality_for("avif") == 50
    partial = preset(quality={"avif": 40}).spec
    assert (partial.quality_for("jpeg"), partial.quality_for("avif")) == (80, 40)


def test_keeping_animation_never_negotiates_avif() -> None:
    animated = preset(format="auto", animation="keep")
    assert animated.format_class("image/avif,image/webp", avif=True) == "webp"
    assert animated.format_class("image/avif", avif=True) == "legacy"
    assert animated.format_classes(avif=True) == ("webp", "legacy")
