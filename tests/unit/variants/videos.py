"""Videos for the poster tests, made on the spot by ffmpeg."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def ffmpeg_executable() -> str:
    """ffmpeg, or the test is skipped (failed in CI, whose .ci/run installs it)."""
    path = shutil.which("ffmpeg")
    if path is None:
        message = "ffmpeg is not installed (apt-get install ffmpeg, as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def make_video(path: Path, graph: str, codec: list[str]) -> bytes:
    """The video of the lavfi filter graph ``graph`` (its output labelled [out0]), encoded with
    ``codec`` options in the container ``path``'s extension names."""
    subprocess.run(
        [ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", graph, *codec, str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path.read_bytes()
