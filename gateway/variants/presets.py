"""Variant presets: what ``?variant=NAME`` means, which buckets may use it, and how the
derivative it produces is named.

A derivative is stored under (object version, variant key). The variant key carries a hash of
everything that shapes the output pixels, so editing a preset in the YAML yields new keys (new
renders) and the derivatives of the old spec are simply never looked up again. Settings that
only shape the response (cache_control, on_miss, eager) are left out of the hash: changing them
re-renders nothing.

A preset with ``densities`` also answers ``?variant=NAME@2x`` (and each other density it
lists): the same preset with its box multiplied, a variant of its own (the density is in the
spec, so in the hash). ``NAME@1x`` is NAME itself, the same variant. A density the preset
does not list is refused as an unknown preset is; a bucket allowed NAME may use each of them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Literal

from gateway.config import (
    ALL_VARIANTS,
    INFO_VARIANT,
    GatewayConfig,
    VariantFormat,
    VariantPresetConfig,
)
from gateway.s3 import errors
from gateway.variants.info import InfoSpec
from gateway.variants.render import (
    NEUTRAL_OPTIONS,
    EncodedFormat,
    FrameSpec,
    OutputFormat,
    RenderSpec,
)

# Bump when rendering changes what the same spec produces (a fix, a better resampler), so
# every derivative is made again rather than served stale.
RENDERER_VERSION = 1
# Format classes: a preset's fixed format, or what "auto" chose from the Accept header; "json"
# is the source info's.
FormatClass = OutputFormat | Literal["json"]
# Bump when the source info changes what it says of the same source.
INFO_VERSION = 1

_ACCEPT_CANDIDATES = ("image/avif", "image/webp")
# NAME@2x: a preset's name, then a density.
_DENSITY = re.compile(r"^(?P<name>.+)@(?P<density>[1-9][0-9]*)x$")


@dataclass(frozen=True)
class Preset:
    name: str
    # The render spec for a fixed format; for "auto", its format is replaced per request.
    spec: RenderSpec | InfoSpec
    format: VariantFormat | Literal["json"]
    cache_control: str | None
    on_miss: Literal["wait", "original"]
    eager: bool
    spec_hash: str
    # The densities above 1 this preset also offers (NAME@2x).
    densities: tuple[int, ...] = ()
    # The preset's own name (``name`` is NAME@2x for a density).
    base: str = ""

    @classmethod
    def from_config(cls, name: str, config: VariantPresetConfig) -> Preset:
        quality = config.quality
        # JPEG's number stands for all; WebP's and AVIF's are kept where they differ.
        lossy: list[tuple[EncodedFormat, int]] = [("avif", quality.avif), ("webp", quality.webp)]
        qualities = tuple((encoded, value) for encoded, value in lossy if value != quality.jpeg)
        spec = RenderSpec(
            width=config.width,
            height=config.height,
            fit=config.fit,
            format="legacy" if config.format == "auto" else config.format,
            quality=quality.jpeg,
            background=_rgb(config.background) if config.background else None,
            qualities=qualities,
            strip_metadata=config.strip_metadata,
            progressive=config.progressive,
            avif_speed=config.avif_speed,
            animation=config.animation,
            max_frames=config.max_frames,
            upscale=config.upscale,
            frame=(FrameSpec(config.frame.seconds, config.frame.percent) if config.frame else None),
            gravity=config.gravity,
        )
        return cls(
            name=name,
            spec=spec,
            format=config.format,
            cache_control=config.cache_control,
            on_miss=config.on_miss,
            eager=config.eager,
            spec_hash=spec_hash(spec),
            densities=tuple(sorted(density for density in set(config.densities) if density > 1)),
            base=name,
        )

    def at_density(self, density: int) -> Preset:
        """This preset at ``density`` (one it offers, or 1: itself)."""
        if density == 1:
            return self
        assert density in self.densities and isinstance(self.spec, RenderSpec)
        spec = replace(self.spec, density=density)
        return replace(
            self, name=f"{self.base}@{density}x", spec=spec, spec_hash=spec_hash(spec), densities=()
        )

    def with_densities(self) -> list[Preset]:
        """This preset at 1x and at each density it offers (an eager render makes each)."""
        return [self, *(self.at_density(density) for density in self.densities)]

    @classmethod
    def info(cls) -> Preset:
        """The built-in ``?variant=info``: the source's description, as JSON."""
        spec = InfoSpec()
        return cls(
            name=INFO_VARIANT,
            spec=spec,
            format=spec.format,
            # The source object's own, as for a preset that sets none.
            cache_control=None,
            on_miss="wait",
            eager=False,
            spec_hash=spec_hash(spec),
            base=INFO_VARIANT,
        )

    @property
    def negotiated(self) -> bool:
        """Whether the output format depends on the request (answers carry Vary: Accept)."""
        return self.format == "auto"

    def _avif(self, avif: bool) -> bool:
        # A preset that keeps animations offers WebP or the legacy class (GIF for an
        # animation): animated AVIF is slow to encode and not animated everywhere AVIF shows.
        keeps_animation = isinstance(self.spec, RenderSpec) and self.spec.animation == "keep"
        return avif and not keeps_animation

    def format_class(self, accept: str | None, avif: bool) -> FormatClass:
        if self.format == "auto":
            return negotiate(accept, self._avif(avif))
        return self.format

    def format_classes(self, avif: bool) -> tuple[FormatClass, ...]:
        """Every format class this preset can produce (an eager render makes each)."""
        if self.format != "auto":
            return (self.format,)
        return ("avif", "webp", "legacy") if self._avif(avif) else ("webp", "legacy")

    def render_spec(self, format_class: FormatClass) -> RenderSpec | InfoSpec:
        if isinstance(self.spec, InfoSpec) or format_class == "json":
            return self.spec
        return replace(self.spec, format=format_class)

    def variant_key(self, format_class: FormatClass) -> str:
        """The derivatives.variant_key of this preset's output in ``format_class``.

        The name keeps rows readable; the hash is what makes a changed spec a new derivative.
        """
        return f"{self.name}:{format_class}:{self.spec_hash}"


def spec_hash(spec: RenderSpec | InfoSpec) -> str:
    """A stable digest of what shapes the pixels, the format aside (it is in the key apart)."""
    if isinstance(spec, InfoSpec):
        fields: dict[str, object] = {"info": INFO_VERSION}
    else:
        fields = asdict(spec)
        # Left out at its default, so the presets of before gravity existed keep their
        # derivatives (the centre crop they made is what "centre" makes).
        if spec.gravity == "centre":
            del fields["gravity"]
        # Likewise each option that came later, at the value that renders as before.
        for name, neutral in NEUTRAL_OPTIONS.items():
            if fields[name] == neutral:
                del fields[name]
        fields["renderer"] = RENDERER_VERSION
    fields.pop("format", None)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _rgb(color: str) -> tuple[int, int, int]:
    value = int(color.removeprefix("#"), 16)
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


def negotiate(accept: str | None, avif: bool) -> FormatClass:
    """Reduce an Accept header to a format class: "avif", "webp" or "legacy".

    Only an explicit ``image/avif`` or ``image/webp`` counts (browsers that decode them say
    so); ``*/*`` and ``image/*`` do not, since a client saying that may decode only JPEG.
    Between the two, the higher q wins, AVIF on a tie; q=0 means "not acceptable"
    (RFC 9110 §12.5.1, §12.4.2).
    """
    if not accept:
        return "legacy"
    weights: dict[str, float] = {}
    for item in accept.split(","):
        media_type, *params = (part.strip() for part in item.split(";"))
        media_type = media_type.lower()
        if media_type not in _ACCEPT_CANDIDATES:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        # A repeated media type: its first mention stands.
        weights.setdefault(media_type, quality)
    if not avif:
        weights.pop("image/avif", None)
    best = max(_ACCEPT_CANDIDATES, key=lambda media_type: weights.get(media_type, 0.0))
    if weights.get(best, 0.0) <= 0.0:
        return "legacy"
    return "avif" if best == "image/avif" else "webp"


class PresetCatalog:
    """The presets of a configuration and the buckets allowed to use each."""

    def __init__(
        self,
        presets: Mapping[str, Preset],
        allowed: Mapping[str, frozenset[str]],
        avif: bool,
        default_allowed: frozenset[str] = frozenset(),
    ) -> None:
        self._presets = dict(presets)
        self._allowed = dict(allowed)
        # What buckets the configuration does not declare may use.
        self._default_allowed = default_allowed
        # Whether this Pillow encodes AVIF: "auto" never picks a format it cannot write.
        self.avif = avif

    @classmethod
    def from_config(cls, config: GatewayConfig) -> PresetCatalog:
        from PIL import features

        presets = {
            name: Preset.from_config(name, preset) for name, preset in config.variants.items()
        }
        # Built in, allowed per bucket like the others (configuration refuses the name).
        presets[INFO_VARIANT] = Preset.info()

        def expand(names: list[str]) -> frozenset[str]:
            return frozenset(presets) if ALL_VARIANTS in names else frozenset(names)

        allowed = {name: expand(bucket.variants) for name, bucket in config.buckets.items()}
        return cls(
            presets,
            allowed,
            avif=bool(features.check("avif")),
            default_allowed=expand(config.default_bucket_variants),
        )

    @property
    def configured(self) -> bool:
        """Whether the configuration names any preset (the built-in info aside)."""
        return any(name != INFO_VARIANT for name in self._presets)

    def variant_keys(self) -> frozenset[str]:
        """The variant key of every derivative these presets make: each preset at each of
        its densities, in each format class it can produce. Stored derivatives with any
        other key are of presets since edited or removed."""
        return frozenset(
            at_density.variant_key(format_class)
            for preset in self._presets.values()
            for at_density in preset.with_densities()
            for format_class in at_density.format_classes(self.avif)
        )

    @property
    def any_eager(self) -> bool:
        return any(preset.eager for preset in self._presets.values())

    def _allowed_on(self, bucket: str) -> frozenset[str]:
        return self._allowed.get(bucket, self._default_allowed)

    def _lookup(self, name: str) -> Preset | None:
        """The preset ``name`` (NAME, or NAME@2x for a density it offers), allowed or not."""
        match = _DENSITY.match(name)
        if match is None:
            return self._presets.get(name)
        preset = self._presets.get(match["name"])
        density = int(match["density"])
        if preset is None or (density != 1 and density not in preset.densities):
            return None
        return preset.at_density(density)

    def resolve(self, bucket: str, name: str) -> Preset:
        """The preset ``?variant=name`` names on ``bucket``; InvalidArgument if there is none
        or the bucket does not allow it."""
        preset = self._lookup(name)
        if preset is None:
            raise errors.InvalidArgument(
                f"There is no variant preset named {name!r}.",
                ArgumentName="variant",
                ArgumentValue=name,
            )
        if preset.base not in self._allowed_on(bucket):
            raise errors.InvalidArgument(
                f"The variant preset {preset.base!r} is not enabled for bucket {bucket!r}.",
                ArgumentName="variant",
                ArgumentValue=name,
            )
        return preset

    def eager(self, bucket: str) -> list[Preset]:
        """The eager presets ``bucket`` allows, at each of their densities, rendered when an
        object is written."""
        names = self._allowed_on(bucket)
        return [
            at_density
            for name in sorted(names)
            if self._presets[name].eager
            for at_density in self._presets[name].with_densities()
        ]

    def eager_preset(self, bucket: str, name: str) -> Preset | None:
        """The eager preset ``name`` if ``bucket`` still allows it (a queued job outlives a
        configuration change: a preset since removed or disallowed is no longer made)."""
        preset = self._lookup(name)
        if preset is None or not preset.eager or preset.base not in self._allowed_on(bucket):
            return None
        return preset
