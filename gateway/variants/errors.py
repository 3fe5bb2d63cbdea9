"""The S3-style errors of variant GETs, and how a failed render is recorded and replayed.

A failed render is stored in derivatives.error as ``Code: message`` and answered again, the
same, until its back-off ends: the client sees one consistent error, and the worker pool is
not asked to decode the same broken image on every GET.
"""

from __future__ import annotations

import math

from gateway.s3.errors import S3Error
from gateway.variants import render


class UnsupportedImage(S3Error):
    code = "UnsupportedImage"
    status = 400
    default_message = "The object is not an image variants can be made of."


class InvalidImage(S3Error):
    code = "InvalidImage"
    status = 400
    default_message = "The image could not be decoded."


class ImageTooLarge(S3Error):
    code = "ImageTooLarge"
    status = 400
    default_message = "The image is larger than variants can be made of."


class VideoUnsupported(S3Error):
    """A poster of a video on a gateway without ffmpeg: the server lacks what the request
    needs (recorded like any failure, and retried once its back-off ends)."""

    code = "NotImplemented"
    status = 501
    default_message = "Posters of videos need ffmpeg, which this gateway cannot run."


class RenderFailed(S3Error):
    """A worker died or the render hit a bug: a 500, recorded like any failure (an image that
    crashes the decoder must not crash it again on every GET)."""

    code = "InternalError"
    status = 500
    default_message = "The variant could not be rendered."


class RetryLater(S3Error):
    """503 SlowDown, with Retry-After when the moment a retry can succeed is known."""

    code = "SlowDown"
    status = 503
    default_message = "Please reduce your request rate."

    def __init__(self, message: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


_FROM_RENDER: dict[type[render.RenderError], type[S3Error]] = {
    render.UnsupportedImage: UnsupportedImage,
    render.InvalidImage: InvalidImage,
    render.ImageTooLarge: ImageTooLarge,
    render.RenderTimeout: RetryLater,
    render.VideoUnsupported: VideoUnsupported,
}
_RECORDED: dict[str, type[S3Error]] = {
    UnsupportedImage.code: UnsupportedImage,
    InvalidImage.code: InvalidImage,
    ImageTooLarge.code: ImageTooLarge,
    RetryLater.code: RetryLater,
    RenderFailed.code: RenderFailed,
    VideoUnsupported.code: VideoUnsupported,
}


def from_render_error(error: render.RenderError) -> S3Error:
    cls = _FROM_RENDER.get(type(error), RenderFailed)
    return cls(str(error) or None)


def record(error: S3Error) -> str:
    """The text derivatives.error keeps for ``error``."""
    return f"{error.code}: {error.message}"


def replay(recorded: str, retry_after: float | None) -> S3Error:
    """The error a recorded failure answers until ``retry_after`` seconds from now."""
    code, _, message = recorded.partition(": ")
    cls = _RECORDED.get(code, RenderFailed)
    if cls is RetryLater:
        return RetryLater(message or None, retry_after)
    return cls(message or None)
