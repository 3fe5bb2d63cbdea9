"""Requests counted in memory and flushed come out as if each had been observed at once."""

from __future__ import annotations

from typing import Any

from prometheus_client import Histogram

from gateway.metrics import REQUEST_BUCKETS, GatewayMetrics

DURATIONS = [0.0004, 0.001, 0.003, 0.003, 0.2, 7.0, 120.0]


def _samples(metric: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metric.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_a_flush_writes_what_observing_each_request_would() -> None:
    metrics = GatewayMetrics()
    for seconds in DURATIONS:
        metrics.request("GetObject", 200, seconds, 10, 4096)
    metrics.request("GetObject", 404, 0.002, 0, 300)
    assert _samples(metrics.duration._metric) == {}
    metrics.flush()
    metrics.flush()  # nothing new: nothing added twice

    direct = Histogram(
        "gateway_request_duration_seconds",
        "",
        ["operation"],
        registry=None,
        buckets=REQUEST_BUCKETS,
    )
    for seconds in [*DURATIONS, 0.002]:
        direct.labels("GetObject").observe(seconds)
    assert _samples(metrics.duration._metric) == _samples(direct)
    requests = _samples(metrics.requests._metric)
    assert (
        requests[("gateway_requests_total", (("operation", "GetObject"), ("status", "2xx")))] == 7
    )
    assert (
        requests[("gateway_requests_total", (("operation", "GetObject"), ("status", "4xx")))] == 1
    )
    assert _samples(metrics.sent)[("gateway_sent_bytes_total", ())] == 8 * 4096 - 4096 + 300
    assert _samples(metrics.received)[("gateway_received_bytes_total", ())] == 70
