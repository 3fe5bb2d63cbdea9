"""Video posters through live gateways: ``?variant=NAME`` of a preset with ``frame``.

The presets are the poster ones of tests.conftest.VARIANT_PRESETS. The videos are made by
ffmpeg when the module starts: three seconds, 320x240, black, then red, then blue, in several
containers and codecs, so the colour of a poster says which second it shows.
"""

from __future__ import annotations

import struct
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    LOCAL_ONLY,
    PUBLIC_BUCKET,
    SEALED,
    UPSTREAM,
    VARIANT_PRESETS,
    GatewayProcess,
    S3Client,
)
from tests.test_variants import derivative_rows, error_code, image_of, put, variant, version_of
from tests.unit.variants.images import BLUE, RED, close_to, encode, thirds
from tests.unit.variants.videos import make_video

# Black for the first second, red for the next, blue for the last.
BANDS = (
    "color=c=black:s=320x240:r=10:d=1[a];color=c=red:s=320x240:r=10:d=1[b];"
    "color=c=blue:s=320x240:r=10:d=1[c];[a][b][c]concat=n=3:v=1{noise}[out0]"
)
# Container, then codec options: one per container posters are made of.
CODECS = {
    "mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
    "mkv": ["-c:v", "mpeg4"],
    "mov": ["-c:v", "mjpeg"],
}
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "mov": "video/quicktime",
}


def bands(path: Path, codec: list[str], noise: bool = True) -> bytes:
    # Noise makes files of hundreds of KiB (blobs, several chunks on a chunked profile);
    # without it a video fits in its metadata row.
    return make_video(path, BANDS.format(noise=",noise=alls=12:allf=t" if noise else ""), codec)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("videos")
    made = {ext: bands(directory / f"bands.{ext}", codec) for ext, codec in CODECS.items()}
    made["tiny.mkv"] = bands(directory / "tiny.mkv", CODECS["mkv"], noise=False)
    return made


def centre(response: requests.Response) -> tuple[int, ...]:
    image = image_of(response).convert("RGB")
    return image.getpixel((image.width // 2, image.height // 2))


def claiming_hours(mkv: bytes) -> bytes:
    """``mkv`` with its declared duration (Segment Info's Duration, a float of milliseconds)
    set to ten hours; its frames are still those of three seconds."""
    tampered = bytearray(mkv)
    at = tampered.find(b"\x44\x89\x88")
    assert at > 0
    tampered[at + 3 : at + 11] = struct.pack(">d", 10 * 3600 * 1000.0)
    return bytes(tampered)


@LOCAL_ONLY
def test_a_poster_of_each_container(gateway, s3, bucket: str, videos: dict[str, bytes]) -> None:
    for name, data in videos.items():
        ext = name.rpartition(".")[2]
        put(s3, bucket, f"clip.{name}", data, CONTENT_TYPES[ext])
        response = variant(gateway, bucket, f"clip.{name}", "poster")
        assert response.headers["Content-Type"] == "image/jpeg", name
        assert image_of(response).size == (160, 120), name
        # 1.5 s: the red second.
        assert close_to(centre(response), RED, 40), (name, centre(response))


@LOCAL_ONLY
def test_frame_positions(gateway, s3, bucket: str, videos: dict[str, bytes]) -> None:
    put(s3, bucket, "clip.mp4", videos["mp4"], "video/mp4")
    # 80% of 3 s: the blue second, covering 80x80.
    late = variant(gateway, bucket, "clip.mp4", "poster-late")
    assert late.headers["Content-Type"] == "image/png"
    assert image_of(late).size == (80, 80)
    assert close_to(centre(late), BLUE, 40)
    # No position: the first frame that is not black, the first red one.
    first = variant(gateway, bucket, "clip.mp4", "poster-first")
    assert first.headers["Content-Type"] == "image/webp"
    assert image_of(first).size == (160, 120)
    assert close_to(centre(first), RED, 40)


@LOCAL_ONLY
def test_a_poster_answers_like_any_variant(
    gateway, s3, bucket: str, videos: dict[str, bytes]
) -> None:
    put(s3, bucket, "clip.webm", videos["webm"], "video/webm")
    whole = variant(gateway, bucket, "clip.webm", "poster")
    etag = whole.headers["ETag"]
    assert whole.headers["Cache-Control"] == VARIANT_PRESETS["poster"]["cache_control"]
    head = variant(gateway, bucket, "clip.webm", "poster", method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["ETag"] == etag
    assert head.headers["Content-Length"] == str(len(whole.content))
    assert head.headers["Content-Type"] == "image/jpeg"
    part = variant(gateway, bucket, "clip.webm", "poster", {"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert part.content == whole.content[:100]
    assert part.headers["Content-Range"] == f"bytes 0-99/{len(whole.content)}"
    unchanged = variant(gateway, bucket, "clip.webm", "poster", {"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.headers["Cache-Control"] == VARIANT_PRESETS["poster"]["cache_control"]
    changed = variant(gateway, bucket, "clip.webm", "poster", {"If-Match": '"0"'})
    assert changed.status_code == 412


@LOCAL_ONLY
def test_presets_and_sources_of_the_other_kind(
    gateway, s3, bucket: str, videos: dict[str, bytes]
) -> None:
    # An image under a poster preset renders as an image: one preset serves a mixed bucket.
    put(s3, bucket, "photo.png", encode(thirds((300, 100)), "PNG"), "image/png")
    photo = variant(gateway, bucket, "photo.png", "poster")
    assert image_of(photo).size == (160, 53)
    # A video under an image preset is refused, and says why.
    put(s3, bucket, "clip.mp4", videos["mp4"], "video/mp4")
    refused = variant(gateway, bucket, "clip.mp4", "thumb")
    assert (refused.status_code, error_code(refused)) == (400, "UnsupportedImage")
    assert "video" in refused.text


def hex_colour(text: str) -> tuple[int, ...]:
    return tuple(int(text[index : index + 2], 16) for index in (1, 3, 5))


@LOCAL_ONLY
def test_info_of_a_video(gateway, s3, videos: dict[str, bytes]) -> None:
    # ?variant=info: the container's duration and frame count, the size and colour of the
    # first frame that is not black (the red second).
    for name, frames in (("mp4", 30), ("webm", None), ("mov", 30)):
        put(s3, PUBLIC_BUCKET, f"clip.{name}", videos[name], CONTENT_TYPES[name])
        response = variant(gateway, PUBLIC_BUCKET, f"clip.{name}", "info")
        assert response.headers["Content-Type"] == "application/json", response.text
        described = response.json()
        colour = hex_colour(described.pop("dominant_color"))
        assert close_to(colour, RED, 60), (name, colour)
        assert abs(described.pop("duration") - 3.0) < 0.1, name
        assert described == {
            "width": 320,
            "height": 240,
            "format": name,
            "frames": frames,
            "oriented_width": 320,
            "oriented_height": 240,
        }
    put(s3, PUBLIC_BUCKET, "cut.mp4", videos["mp4"][: len(videos["mp4"]) // 2], "video/mp4")
    refused = variant(gateway, PUBLIC_BUCKET, "cut.mp4", "info")
    assert (refused.status_code, error_code(refused)) == (400, "InvalidImage")


@LOCAL_ONLY
def test_a_truncated_video_is_recorded_not_retried(
    gateway, s3, bucket: str, gateway_dsn: str, videos: dict[str, bytes]
) -> None:
    # ffmpeg writes an MP4's index last: without its end, no frame can be found.
    put(s3, bucket, "cut.mp4", videos["mp4"][: len(videos["mp4"]) // 2], "video/mp4")
    refused = variant(gateway, bucket, "cut.mp4", "poster")
    assert (refused.status_code, error_code(refused)) == (400, "InvalidImage")
    # No path of the gateway's machine in what the client reads.
    assert "/" not in refused.text.partition("<Message>")[2].partition("</Message>")[0]
    again = variant(gateway, bucket, "cut.mp4", "poster")
    assert (again.status_code, error_code(again)) == (400, "InvalidImage")
    (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, "cut.mp4"))
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["error"].startswith("InvalidImage:")


@LOCAL_ONLY
def test_a_video_claiming_hours_stays_bounded(
    gateway, s3, bucket: str, videos: dict[str, bytes]
) -> None:
    put(s3, bucket, "hours.mkv", claiming_hours(videos["mkv"]), "video/x-matroska")
    started = time.monotonic()
    # 80% of ten hours, capped at the maximum seek, is past every frame: the first one.
    response = variant(gateway, bucket, "hours.mkv", "poster-late")
    assert image_of(response).size == (80, 80)
    assert max(centre(response)) < 60
    assert time.monotonic() - started < 10


@LOCAL_ONLY
def test_a_playlist_posing_as_a_video_is_not_given_to_ffmpeg(gateway, s3, bucket: str) -> None:
    # ffmpeg's HLS demuxer would open what the playlist names; posters choose the demuxer
    # from the file's magic bytes, and this has none.
    playlist = b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n"
    put(s3, bucket, "evil.mp4", playlist * 400, "video/mp4")
    refused = variant(gateway, bucket, "evil.mp4", "poster")
    assert (refused.status_code, error_code(refused)) == (400, "UnsupportedImage")


@pytest.mark.parametrize("gateway", [UPSTREAM, SEALED], indirect=True)
def test_a_poster_of_a_streamed_source(gateway, s3, bucket: str, videos: dict[str, bytes]) -> None:
    # No local file to give ffmpeg: the source is streamed through its profile into a
    # temporary file, deleted once the frame is taken.
    spooled = set(Path(tempfile.gettempdir()).glob("gateway-video-*"))
    put(s3, bucket, "clip.mp4", videos["mp4"], "video/mp4")
    response = variant(gateway, bucket, "clip.mp4", "poster")
    assert image_of(response).size == (160, 120)
    assert close_to(centre(response), RED, 40)
    put(s3, PUBLIC_BUCKET, "clip.mp4", videos["mp4"], "video/mp4")
    described = variant(gateway, PUBLIC_BUCKET, "clip.mp4", "info").json()
    assert (described["format"], described["frames"], described["width"]) == ("mp4", 30, 320)
    assert set(Path(tempfile.gettempdir()).glob("gateway-video-*")) <= spooled


@LOCAL_ONLY
def test_without_ffmpeg_posters_say_so(
    tmp_path: Path,
    gateway: GatewayProcess,
    s3: S3Client,
    bucket: str,
    gateway_dsn: str,
    videos: dict[str, bytes],
) -> None:
    missing = {"ffmpeg": str(tmp_path / "no-ffmpeg"), "ffprobe": str(tmp_path / "no-ffprobe")}
    sibling = gateway.sibling(tmp_path / "without.yaml", video=missing)
    put(s3, bucket, "clip.mp4", videos["mp4"], "video/mp4")
    put(s3, bucket, "photo.png", encode(thirds((300, 100)), "PNG"), "image/png")
    with sibling.running():
        assert sibling.log_path is not None
        log = sibling.log_path.read_text()
        assert "no-ffmpeg and " in log and "poster, poster-first, poster-late" in log
        refused = variant(sibling, bucket, "clip.mp4", "poster")
        assert (refused.status_code, error_code(refused)) == (501, "NotImplemented")
        assert "ffmpeg" in refused.text and str(tmp_path) not in refused.text
        # Images still render under the same preset.
        assert image_of(variant(sibling, bucket, "photo.png", "poster")).size == (160, 53)
    (row,) = derivative_rows(gateway_dsn, version_of(gateway_dsn, bucket, "clip.mp4"))
    assert row["status"] == "failed" and row["error"].startswith("NotImplemented:")
