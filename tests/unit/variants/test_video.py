"""Posters: telling videos by their first bytes, the bounds on every ffmpeg run, and frames
taken from a small video made here."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.variants import video
from gateway.variants.pool import FilePart, _describe_source, _render_source
from gateway.variants.render import (
    FrameSpec,
    ImageTooLarge,
    InvalidImage,
    RenderLimits,
    RenderSpec,
    RenderTimeout,
    UnsupportedImage,
    VideoLimits,
    VideoUnsupported,
)
from tests.unit.variants.images import encode, thirds
from tests.unit.variants.videos import make_video

LIMITS = VideoLimits()


@pytest.mark.parametrize(
    ("head", "container"),
    [
        (b"\x00\x00\x00\x20ftypisom", "mov"),
        (b"\x00\x00\x00\x14ftypqt  ", "mov"),
        (b"\x00\x00\x00\x08wide\x00\x00", "mov"),
        (b"\x00\x00\x10\x00moov\x00\x00", "mov"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81", "matroska"),
        # Still images in the same box format are images.
        (b"\x00\x00\x00\x1cftypavif", None),
        (b"\x00\x00\x00\x18ftypheic", None),
        (b"\x00\x00\x00\x18ftypmif1", None),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01", None),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d", None),
        (b"#EXTM3U\n#EXT-X-", None),
        (b"RIFF\x00\x00\x00\x00AVI ", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, container: str | None) -> None:
    assert video.sniff(head) == container


def options(command: list[str]) -> dict[str, str]:
    """Each option's first value (-f names the input's format first, the output's after)."""
    found: dict[str, str] = {}
    for name, value in itertools.pairwise(command):
        found.setdefault(name, value)
    return found


def test_every_run_is_bounded() -> None:
    command = video.frame_command("/v/clip", "mov", LIMITS, 1000, 12.5)
    pairs = options(command)
    assert pairs["-f"] == "mov"  # the demuxer is chosen, never probed
    assert pairs["-protocol_whitelist"] == "file"
    assert pairs["-probesize"] == str(LIMITS.probe_bytes)
    assert pairs["-analyzeduration"] == "5000000"
    assert pairs["-max_pixels"] == "1000"
    assert pairs["-threads"] == "1"
    assert pairs["-frames:v"] == "1"
    # A fast seek: before the input, by the container's index.
    assert command.index("-ss") < command.index("-i")
    assert pairs["-ss"] == "12.500"
    assert pairs["-i"] == "file:/v/clip"
    assert "-nostdin" in command and command[-1] == "pipe:1"
    probe = video.duration_command("/v/clip", "matroska", LIMITS)
    assert probe[0] == "ffprobe" and "matroska" in probe and "file" in probe


def test_the_default_frame_scans_the_first_seconds() -> None:
    command = video.frame_command("/v/clip", "matroska", LIMITS, 1000, 0.0, scan=True)
    pairs = options(command)
    assert "-ss" not in command
    assert pairs["-t"] == str(video.SCAN_SECONDS)
    assert "blackframe" in pairs["-vf"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two seconds at 10 fps: black, then white."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    graph = (
        "color=c=black:s=64x48:r=10:d=1[a];color=c=white:s=64x48:r=10:d=1[b];"
        "[a][b]concat=n=2:v=1[out0]"
    )
    make_video(path, graph, ["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    return str(path)


def mean(ppm: bytes) -> float:
    pixels = ppm.split(b"\n", 3)[3]  # P6, size, maxval, then the pixels
    return sum(pixels) / len(pixels)


@pytest.mark.parametrize(
    ("frame", "bright"),
    [
        (FrameSpec(), True),  # the first frame that is not black
        (FrameSpec(seconds=0.5), False),
        (FrameSpec(seconds=1.5), True),
        (FrameSpec(percent=25), False),
        (FrameSpec(percent=75), True),
        (FrameSpec(seconds=60), False),  # past the end: the first frame
    ],
)
def test_poster_frame(clip: str, frame: FrameSpec, bright: bool) -> None:
    still = video.poster_frame(clip, "mov", frame, LIMITS, 10_000, 10)
    assert still.startswith(b"P6\n64 48\n255\n")
    assert (mean(still) > 128) is bright


def test_poster_frame_failures(clip: str, tmp_path: Path) -> None:
    with pytest.raises(ImageTooLarge, match="64x48"):
        video.poster_frame(clip, "mov", FrameSpec(seconds=1), LIMITS, 1000, 10)
    with pytest.raises(RenderTimeout):
        video.poster_frame(clip, "mov", FrameSpec(seconds=1), LIMITS, 10_000, 0.001)
    # The wrong demuxer (a renamed file is sniffed, never trusted by its name) fails cleanly.
    with pytest.raises(InvalidImage) as excinfo:
        video.poster_frame(clip, "matroska", FrameSpec(seconds=1), LIMITS, 10_000, 10)
    assert clip not in str(excinfo.value)
    absent = VideoLimits(ffmpeg=str(tmp_path / "ffmpeg"))
    with pytest.raises(VideoUnsupported):
        video.poster_frame(clip, "mov", FrameSpec(seconds=1), absent, 10_000, 10)
    assert video.missing_programs(absent) == [absent.ffmpeg]


# --- what a render worker makes of a source under a poster preset ---------------------------

POSTER = RenderSpec(32, None, "inside", "png", 80, frame=FrameSpec(seconds=1.5))
RENDER_LIMITS = RenderLimits(64 * 1024**2, 100_000_000)


def whole(path: str) -> tuple[FilePart, ...]:
    return (FilePart(path, 0, Path(path).stat().st_size),)


def test_a_video_in_parts_or_in_bytes_is_rendered(clip: str, tmp_path: Path) -> None:
    data = Path(clip).read_bytes()
    # A multipart object on a local profile: its parts are copied into one file for ffmpeg.
    first, second = tmp_path / "part1", tmp_path / "part2"
    first.write_bytes(b"padding" + data[:1000])
    second.write_bytes(data[1000:] + b"more")
    parts = (FilePart(str(first), 7, 1000), FilePart(str(second), 0, len(data) - 1000))
    for source in (whole(clip), parts, data):
        rendered = _render_source(source, POSTER, RENDER_LIMITS, 10)
        assert (rendered.format, rendered.width, rendered.height) == ("png", 32, 24)


def test_sources_of_the_other_kind(clip: str, tmp_path: Path) -> None:
    # An image under a poster preset renders as an image.
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(thirds((300, 100)), "PNG"))
    rendered = _render_source(whole(str(photo)), POSTER, RENDER_LIMITS, 10)
    assert (rendered.width, rendered.height) == (32, 11)
    # A video under an image preset is refused, and told apart from any non-image.
    image_preset = replace(POSTER, frame=None)
    with pytest.raises(UnsupportedImage, match="video"):
        _render_source(whole(clip), image_preset, RENDER_LIMITS, 10)


def test_the_video_size_limit(clip: str) -> None:
    size = Path(clip).stat().st_size
    small = replace(RENDER_LIMITS, video=VideoLimits(max_source_bytes=size - 1))
    with pytest.raises(ImageTooLarge, match=f"{size} bytes"):
        _render_source(whole(clip), POSTER, small, 10)


# --- ?variant=info of a video ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"\x00\x00\x00\x20ftypisom", "mp4"),
        (b"\x00\x00\x00\x14ftypqt  ", "mov"),
        (b"\x00\x00\x10\x00moov\x00\x00", "mov"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "webm"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "mkv"),
    ],
)
def test_format_name(head: bytes, name: str) -> None:
    container = video.sniff(head)
    assert container is not None
    assert video.format_name(head, container) == name


def test_info_of_a_video(clip: str) -> None:
    head = Path(clip).read_bytes()[: video.NAME_BYTES]
    assert video.facts(clip, "mov", head, LIMITS, 10) == video.VideoFacts("mp4", 2.0, 20)
    probe = video.describe_command(clip, "mov", LIMITS)
    assert "-probesize" in probe and "file" in probe and probe[-1] == "file:" + clip
    described = json.loads(_describe_source(whole(clip), RENDER_LIMITS, 10).data)
    # The first frame that is not black: white.
    assert described == {
        "width": 64,
        "height": 48,
        "format": "mp4",
        "frames": 20,
        "duration": 2.0,
        "oriented_width": 64,
        "oriented_height": 48,
        "dominant_color": "#ffffff",
    }
    # A truncated MP4 (its index is written last) cannot be described.
    cut = Path(clip).with_name("cut.mp4")
    cut.write_bytes(Path(clip).read_bytes()[:400])
    with pytest.raises(InvalidImage):
        video.facts(str(cut), "mov", head, LIMITS, 10)
    with pytest.raises(InvalidImage):
        _describe_source(whole(str(cut)), RENDER_LIMITS, 10)
