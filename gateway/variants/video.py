"""Posters: one still of a video, taken by ffmpeg, for render.py to resize and encode.

This runs in the render workers (gateway.variants.pool), beside render.py: ffmpeg is a child
of the worker, so the pool's queue bounds how many run at once and its hard kill ends them
(a worker killed takes its ffmpeg with it: PR_SET_PDEATHSIG).

What a hostile file can make ffmpeg do is bounded at every step:
- the demuxer is chosen from the file's first bytes (``-f mov`` or ``-f matroska``), never
  probed among ffmpeg's hundreds, and only the ``file`` protocol is allowed: a playlist
  posing as a video cannot make ffmpeg open other files or URLs;
- ``-probesize`` and ``-analyzeduration`` bound what is read to find the streams; ``-ss``
  before ``-i`` seeks by the container's index (capped by max_seek_seconds), so a file
  claiming hours of duration is not read to the claimed position;
- ``-max_pixels`` refuses frames above the pixel limit, one thread decodes, RLIMIT_DATA bounds
  memory, and the render's deadline kills it.

The frame comes back as PPM (raw RGB with a header): nothing to compress or decompress.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import re
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Literal

from gateway.variants.render import (
    FrameSpec,
    ImageTooLarge,
    InvalidImage,
    RenderTimeout,
    VideoLimits,
    VideoUnsupported,
)

# ffmpeg's demuxers for the containers posters are made of: MP4 and QuickTime ("mov"),
# Matroska and WebM ("matroska").
Container = Literal["mov", "matroska"]
# The bytes sniff() needs.
HEAD_BYTES = 12
# The bytes format_name() needs: a WebM's EBML header names its DocType within them.
NAME_BYTES = 64
_EBML = b"\x1a\x45\xdf\xa3"
# ISO BMFF brands of still images (AVIF, HEIF): an ftyp box that is no video.
_IMAGE_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
)
# The first box of QuickTime files written before ftyp existed.
_QUICKTIME_BOXES = frozenset({b"moov", b"mdat", b"wide"})
# The default frame is the first that is not black within this many seconds (a fade in, a
# black leader); if every one is, the first frame.
SCAN_SECONDS = 5.0
# blackframe: a pixel is black below this luma (of 255); a frame is black when at least
# BLACK_PERCENT of its pixels are.
BLACK_LUMA = 32
BLACK_PERCENT = 98
_NOT_BLACK = (
    f"blackframe=amount=0:threshold={BLACK_LUMA},"
    f"metadata=mode=select:key=lavfi.blackframe.pblack:value={BLACK_PERCENT}:function=less"
)
_PR_SET_PDEATHSIG = 1
# What ffmpeg says of a frame above -max_pixels.
_OVERSIZED = re.compile(r"Picture size (\d+x\d+) exceeds specified max pixel count")


def sniff(head: bytes) -> Container | None:
    """The container of a video from its first HEAD_BYTES bytes; None for anything else."""
    if head[:4] == _EBML:
        return "matroska"
    box = head[4:8]
    if box == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mov"
    return "mov" if box in _QUICKTIME_BOXES else None


def format_name(head: bytes, container: Container) -> str:
    """What a page calls the video's format: mp4, mov, webm or mkv."""
    if container == "matroska":
        return "webm" if b"webm" in head[:NAME_BYTES] else "mkv"
    return "mov" if head[4:12] == b"ftypqt  " or head[4:8] != b"ftyp" else "mp4"


@dataclass(frozen=True)
class VideoFacts:
    """What ``?variant=info`` says of a video besides its frame's size and colour."""

    format: str
    # As the container declares them (bounded by the probe limits); None when it does not.
    duration: float | None
    frames: int | None


def describe_command(path: str, container: Container, limits: VideoLimits) -> list[str]:
    return [
        limits.ffprobe, "-v", "error", *input_options(container, limits),
        "-select_streams", "v:0", "-show_entries", "format=duration:stream=nb_frames",
        "-of", "json", "file:" + path,
    ]  # fmt: skip


def facts(
    path: str, container: Container, head: bytes, limits: VideoLimits, timeout: float
) -> VideoFacts:
    """The video's format, and the duration and frame count its container declares."""
    output = _run(
        describe_command(path, container, limits), path, limits, 0, time.monotonic() + timeout
    )
    try:
        probed = json.loads(output)
        streams = probed.get("streams") or [{}]
        duration = _number(probed.get("format", {}).get("duration"))
        frames = _number(streams[0].get("nb_frames"))
    except (ValueError, AttributeError, TypeError):
        duration = frames = None
    return VideoFacts(
        format_name(head, container),
        round(duration, 3) if duration is not None else None,
        int(frames) if frames is not None and frames >= 1 else None,
    )


def _number(value: object) -> float | None:
    """ffprobe's number as text ("3.000000"), or None for "N/A", absent or nonsense."""
    if not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def missing_programs(limits: VideoLimits) -> list[str]:
    """The programs posters need that cannot be found."""
    return [name for name in (limits.ffmpeg, limits.ffprobe) if shutil.which(name) is None]


def poster_frame(
    path: str,
    container: Container,
    frame: FrameSpec,
    limits: VideoLimits,
    max_pixels: int,
    timeout: float,
) -> bytes:
    """The frame of the video at ``path`` that ``frame`` names, as PPM. A position past the
    end (or past what the file really holds) gives the first frame."""
    run = functools.partial(_frame, path, container, limits, max_pixels, time.monotonic() + timeout)
    if frame.seconds is None and frame.percent is None:
        still = run(0.0, scan=True)
    else:
        position = frame.seconds
        if position is None:
            assert frame.percent is not None
            duration = _duration(path, container, limits, time.monotonic() + timeout)
            position = frame.percent / 100 * (duration or 0.0)
        position = min(position, limits.max_seek_seconds)
        still = run(position) if position > 0 else b""
    if not still:
        still = run(0.0)
    if not still:
        raise InvalidImage("The video has no frame that could be decoded.")
    return still


def input_options(container: Container, limits: VideoLimits) -> list[str]:
    """ffmpeg's (and ffprobe's) options that bound reading the input."""
    return [
        "-probesize", str(limits.probe_bytes),
        "-analyzeduration", str(round(limits.probe_seconds * 1_000_000)),
        "-protocol_whitelist", "file",
        "-f", container,
    ]  # fmt: skip


def frame_command(
    path: str,
    container: Container,
    limits: VideoLimits,
    max_pixels: int,
    position: float,
    scan: bool = False,
) -> list[str]:
    """The ffmpeg command writing one frame at ``position`` seconds (with ``scan``: the first
    not black within SCAN_SECONDS from there) to stdout as PPM."""
    command = [limits.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
    command += input_options(container, limits)
    command += ["-threads", "1", "-max_pixels", str(max_pixels)]
    if position > 0:
        command += ["-ss", f"{position:.3f}"]
    if scan:
        command += ["-t", str(SCAN_SECONDS)]
    command += ["-i", "file:" + path, "-map", "0:v:0", "-an", "-sn", "-dn"]
    command += ["-filter_threads", "1", "-frames:v", "1"]
    if scan:
        command += ["-vf", _NOT_BLACK]
    return [*command, "-f", "image2pipe", "-c:v", "ppm", "pipe:1"]


def duration_command(path: str, container: Container, limits: VideoLimits) -> list[str]:
    return [
        limits.ffprobe, "-v", "error", *input_options(container, limits),
        "-show_entries", "format=duration", "-of", "default=noprint_wrappers=1:nokey=1",
        "file:" + path,
    ]  # fmt: skip


def _frame(
    path: str,
    container: Container,
    limits: VideoLimits,
    max_pixels: int,
    deadline: float,
    position: float,
    scan: bool = False,
) -> bytes:
    command = frame_command(path, container, limits, max_pixels, position, scan)
    return _run(command, path, limits, max_pixels, deadline)


def _duration(
    path: str, container: Container, limits: VideoLimits, deadline: float
) -> float | None:
    """The duration the container declares (bounded by the probe limits); None if unknown."""
    output = _run(duration_command(path, container, limits), path, limits, 0, deadline)
    try:
        duration = float(output.decode("ascii", "replace").strip())
    except ValueError:
        return None  # "N/A"
    return duration if duration >= 0 else None


def _run(
    command: list[str], path: str, limits: VideoLimits, max_pixels: int, deadline: float
) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RenderTimeout("Rendering the variant took too long.")
    libc = _libc()
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=remaining,
            # Its own process group: a signal to the worker's group is not ffmpeg's.
            start_new_session=True,
            preexec_fn=functools.partial(_limit_child, libc, limits.memory_bytes),
            check=False,
        )
    except (FileNotFoundError, PermissionError):
        # Not the program's path: that is the operator's to read, in the startup warning.
        raise VideoUnsupported(
            "Posters of videos need ffmpeg, which this gateway cannot run."
        ) from None
    except subprocess.TimeoutExpired:
        raise RenderTimeout("Rendering the variant took too long.") from None
    if done.returncode == 0:
        return done.stdout
    errors = done.stderr.decode("utf-8", "replace")
    oversized = _OVERSIZED.search(errors)
    if oversized is not None:
        raise ImageTooLarge(
            f"The video is {oversized.group(1)} pixels; posters are made of videos of up to "
            f"{max_pixels} pixels."
        )
    if "Cannot allocate memory" in errors or "failed to map segment" in errors:
        raise ImageTooLarge(
            "Decoding the video needs more memory than a poster may use "
            f"({limits.memory_bytes // 1024**2} MiB)."
        )
    raise InvalidImage(f"The video could not be decoded: {_last_line(errors, path)}")


def _last_line(errors: str, path: str) -> str:
    """ffmpeg's last complaint, without the file's name (a path of this machine)."""
    lines = [line for line in errors.splitlines() if line.strip()]
    line = lines[-1] if lines else "no frame"
    return line.replace("file:" + path, "the video").replace(path, "the video").strip()[:300]


@functools.cache
def _libc() -> ctypes.CDLL:
    # Loaded before the fork: the child must not load libraries between fork and exec.
    return ctypes.CDLL(None, use_errno=True)


def _limit_child(libc: ctypes.CDLL, memory_bytes: int) -> None:
    """In ffmpeg's process before it starts: die with the worker, and bound its memory
    (RLIMIT_DATA, as the worker's own: what it reserves but never touches does not count)."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
