"""Variant errors: render errors as S3 errors, recorded and replayed; the retry back-off."""

from __future__ import annotations

import pickle

import pytest

from gateway.config import LimitsConfig
from gateway.variants import errors, render
from gateway.variants.pool import WorkerCrashed
from gateway.variants.service import VariantPolicy


@pytest.mark.parametrize(
    ("raised", "code", "status"),
    [
        (render.UnsupportedImage("not an image"), "UnsupportedImage", 400),
        (render.InvalidImage("truncated"), "InvalidImage", 400),
        (render.ImageTooLarge("too many pixels"), "ImageTooLarge", 400),
        (render.RenderTimeout("too long"), "SlowDown", 503),
        (WorkerCrashed("died"), "InternalError", 500),
    ],
)
def test_render_errors_become_s3_errors(raised: render.RenderError, code: str, status: int) -> None:
    error = errors.from_render_error(raised)
    assert (error.code, error.status, error.message) == (code, status, str(raised))
    # What a worker raises reaches the gateway process intact.
    assert str(pickle.loads(pickle.dumps(raised))) == str(raised)


@pytest.mark.parametrize(
    "error",
    [
        errors.UnsupportedImage("The object is not an image."),
        errors.InvalidImage("The image could not be decoded: broken data stream"),
        errors.ImageTooLarge("The image is 100000x100000 pixels: too many: really"),
        errors.RetryLater("Rendering the variant took too long."),
        errors.RenderFailed(),
    ],
)
def test_recorded_errors_replay_the_same(error: errors.S3Error) -> None:
    replayed = errors.replay(errors.record(error), retry_after=12.2)
    assert type(replayed) is type(error)
    assert (replayed.code, replayed.status, replayed.message) == (
        error.code,
        error.status,
        error.message,
    )


def test_replayed_slowdown_says_when_to_retry() -> None:
    replayed = errors.replay("SlowDown: Rendering the variant took too long.", retry_after=12.2)
    assert replayed.headers() == {"Retry-After": "13"}
    assert errors.RetryLater("busy").headers() == {}
    assert errors.RetryLater("busy", retry_after=0.01).headers() == {"Retry-After": "1"}


def test_an_unknown_recorded_code_is_an_internal_error() -> None:
    replayed = errors.replay("SomethingNew: what", retry_after=None)
    assert (replayed.code, replayed.status, replayed.message) == ("InternalError", 500, "what")
    assert errors.replay("", retry_after=None).message == errors.RenderFailed.default_message


def test_retry_back_off_doubles_up_to_its_cap() -> None:
    policy = VariantPolicy(
        max_source_bytes=1, lease_seconds=60, retry_seconds=60, retry_max_seconds=3600
    )
    delays = [policy.retry_delay(attempts) for attempts in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert policy.retry_delay(10_000) == 3600


def test_policy_from_limits() -> None:
    limits = LimitsConfig(max_source_bytes=1024, render_timeout_seconds=10, render_retry_seconds=5)
    policy = VariantPolicy.from_limits(limits)
    assert policy.max_source_bytes == 1024
    # Room to wait for a worker, render, and read and store; the lease itself is short and
    # renewed meanwhile.
    assert policy.render_seconds > 2 * 10
    assert policy.lease_seconds == limits.render_lease_seconds
    assert policy.retry_delay(1) == 5
    assert policy.retry_max_seconds == limits.render_retry_max_seconds
