"""Posters: telling videos by their first bytes, the bounds on every ffmpeg run, and frames
taken from a small video made here."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gateway.variants import video
from gateway.variants.render import (
    FrameSpec,
    ImageTooLarge,
    InvalidImage,
    RenderTimeout,
    VideoLimits,
    VideoUnsupported,
)
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
