"""Prometheus metrics, in prometheus-client's multiprocess mode.

Every gateway process (one per --workers process) writes its values to memory-mapped files in
one directory, and a scrape answered by any of them reads them all: one coherent set. That
mode is chosen when prometheus_client is imported, from PROMETHEUS_MULTIPROC_DIR, so the
directory is named in the environment (``prepare_directory``, by the parent at each server
start, inherited by spawned workers) before ``enable`` first imports the library.

The metrics are per process by nature (each process has its own files), so this module keeps
the process's one ``GatewayMetrics``; ``current()`` is None when metrics are off, and every
instrumented place then costs one check.
"""

from __future__ import annotations

import bisect
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request durations: from a cached small GET (a millisecond) to a large upload (minutes).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RENDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

_current: GatewayMetrics | None = None


def prepare_directory(data_dir: Path) -> Path:
    """An empty metrics directory for this server start, named in the environment for this
    process and the workers it spawns: what a previous run left would add to the counts."""
    directory = (data_dir / "metrics").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[ENVIRONMENT] = str(directory)
    return directory


def current() -> GatewayMetrics | None:
    return _current


def enable() -> GatewayMetrics:
    """This process's metrics (made on first call); needs ``prepare_directory`` before."""
    global _current
    if ENVIRONMENT not in os.environ:
        raise RuntimeError(f"{ENVIRONMENT} must be set before metrics are enabled")
    if _current is None:
        _current = GatewayMetrics()
    return _current


def process_exited(pid: int) -> None:
    """Forget the live gauges of a worker that exited (its counters still count)."""
    from prometheus_client import multiprocess

    directory = os.environ.get(ENVIRONMENT)
    if directory:
        multiprocess.mark_process_dead(pid, directory)


class _Children:
    """A labelled metric's children by label values, made once: ``labels()`` costs a lock and
    a tuple per call, too much on every request."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class GatewayMetrics:
    def __init__(self) -> None:
        # Imported here, never at module level: the multiprocess mode is fixed at import.
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, list(labels), registry=None)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            # livesum: the sum over live processes; an exited worker's value is dropped.
            return Gauge(name, doc, list(labels), registry=None, multiprocess_mode="livesum")

        def histogram(name: str, doc: str, labels: Iterable[str], buckets: Any) -> Histogram:
            return Histogram(name, doc, list(labels), registry=None, buckets=buckets)

        self.requests = _Children(
            counter(
                "gateway_requests",
                "Requests by S3 operation and status class.",
                ["operation", "status"],
            )
        )
        self.duration = _Children(
            histogram(
                "gateway_request_duration_seconds",
                "Request duration by S3 operation.",
                ["operation"],
                REQUEST_BUCKETS,
            )
        )
        self.received = counter("gateway_received_bytes", "Request body bytes read.")
        self.sent = counter("gateway_sent_bytes", "Response body bytes sent.")
        self.in_flight = gauge("gateway_requests_in_flight", "Requests being handled.")
        # Counted per request in a plain int, written to the gauge by the periodic sample:
        # two writes to the shared file per request saved.
        self.requests_in_flight = 0
        self.db_connections = _Children(
            gauge(
                "gateway_db_pool_connections",
                "Postgres pool connections: open (size) and in use.",
                ["state"],
            )
        )
        self.db_waiters = gauge(
            "gateway_db_pool_waiters", "Tasks waiting for a Postgres pool connection."
        )
        self.db_errors = _Children(
            counter(
                "gateway_db_query_errors",
                "Failed Postgres statements: unavailable (database down or too slow) or error.",
                ["kind"],
            )
        )
        self.upstream_calls = _Children(
            counter("gateway_upstream_calls", "Upstream S3 calls (attempts).", ["profile"])
        )
        self.upstream_errors = _Children(
            counter("gateway_upstream_errors", "Upstream S3 calls that failed.", ["profile"])
        )
        self.upstream_retries = _Children(
            counter("gateway_upstream_retries", "Upstream S3 calls retried.", ["profile"])
        )
        self.variant_requests = _Children(
            counter(
                "gateway_variant_requests",
                "Variant GET/HEAD by outcome: hit (stored), render (made for this request),"
                " original (on_miss: original), error.",
                ["result"],
            )
        )
        self.renders = _Children(
            counter(
                "gateway_variant_renders",
                "Renders by result: ok, failed (recorded), overloaded (SlowDown).",
                ["result"],
            )
        )
        self.render_duration = _Children(
            histogram(
                "gateway_variant_render_duration_seconds",
                "Render duration (waiting for a worker and rendering) by result.",
                ["result"],
                RENDER_BUCKETS,
            )
        )
        self.render_queue = gauge(
            "gateway_render_queue_depth", "Renders waiting for a render worker."
        )
        self.render_busy = gauge("gateway_render_workers_busy", "Render workers rendering.")
        self.slowdowns = counter(
            "gateway_slowdowns", "Requests answered 503 SlowDown (render queue full and others)."
        )
        self.janitor_runs = _Children(
            counter("gateway_janitor_runs", "Janitor passes by result.", ["result"])
        )
        self.janitor_collected = counter(
            "gateway_janitor_blobs_collected", "Blobs the janitor deleted."
        )
        self.lifecycle_actions = _Children(
            counter(
                "gateway_lifecycle_actions",
                "What lifecycle rules removed, by action (expired, noncurrent, marker, aborted).",
                ["action"],
            )
        )
        self._status_classes = {
            status: STATUS_CLASSES[status // 100 - 1] for status in range(100, 600)
        }
        self._bounds = [*REQUEST_BUCKETS, float("inf")]
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._bytes_in = 0
        self._bytes_out = 0

    def request(
        self, operation: str, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        """Count a request in this process's memory; ``flush`` writes the counts out."""
        key = (operation, self._status_classes.get(status, "5xx"))
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(len(self._bounds))
        pending.count += 1
        pending.seconds += seconds
        pending.buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        self._bytes_in += bytes_in
        self._bytes_out += bytes_out

    def flush(self) -> None:
        """Write the requests counted since the last flush to the shared files: a few writes
        a second instead of several per request (each is a locked write to a mapped file)."""
        for (operation, status), pending in self._pending.items():
            if not pending.count:
                continue
            self.requests(operation, status).inc(pending.count)
            histogram = self.duration(operation)
            # A histogram child's buckets and sum, as observe() adds to them (guarded by
            # tests/unit/test_metrics.py against prometheus-client changing them).
            for index, count in enumerate(pending.buckets):
                if count:
                    histogram._buckets[index].inc(count)
                    pending.buckets[index] = 0
            histogram._sum.inc(pending.seconds)
            pending.count, pending.seconds = 0, 0.0
        if self._bytes_in:
            self.received.inc(self._bytes_in)
            self._bytes_in = 0
        if self._bytes_out:
            self.sent.inc(self._bytes_out)
            self._bytes_out = 0


class _Pending:
    """Requests of one operation and status class not yet written out."""

    __slots__ = ("buckets", "count", "seconds")

    def __init__(self, buckets: int) -> None:
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * buckets


def exposition(extra: Iterable[Any] = ()) -> bytes:
    """Every process's metrics, plus ``extra`` metric families read at scrape time."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    families = list(extra)

    class _Snapshot:
        def collect(self) -> Iterator[Any]:
            return iter(families)

    registry.register(_Snapshot())
    return generate_latest(registry)


def bucket_families(usage: Iterable[tuple[str, int, int]]) -> list[Any]:
    """Objects and bytes per bucket, as gauges."""
    from prometheus_client.core import GaugeMetricFamily

    objects = GaugeMetricFamily("gateway_bucket_objects", "Objects per bucket.", labels=["bucket"])
    size = GaugeMetricFamily("gateway_bucket_bytes", "Object bytes per bucket.", labels=["bucket"])
    for bucket, count, total in usage:
        objects.add_metric([bucket], count)
        size.add_metric([bucket], total)
    return [objects, size]
