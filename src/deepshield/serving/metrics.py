"""The server's Prometheus metrics (`GET /metrics`): what it analysed, how long that took, what it refused
and how loaded it is now. One registry per app, so that several apps in one process count apart."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds one analysis took: an image takes well under a second here, a video tens of seconds.
_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServerMetrics:
    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._analyses = Counter(
            "deepshield_analyses",
            "Files analysed, by kind (image, video) and verdict",
            ["kind", "verdict"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "deepshield_analysis_seconds",
            "Time one analysis took, by kind",
            ["kind"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "deepshield_errors",
            "Requests refused or failed, and jobs failed, by error code (the API's `error`)",
            ["code"],
            registry=self.registry,
        )
        info = Gauge("deepshield_model_info", "The model in use (always 1)", ["model"], registry=self.registry)
        info.labels(model=model).set(1)

    def watch(self, name: str, description: str, read: Callable[[], float]) -> None:
        """A gauge read at each scrape (load: analyses running, jobs pending, ...)."""
        Gauge(name, description, registry=self.registry).set_function(read)

    def analysed(self, kind: str, verdict: str, seconds: float) -> None:
        self._analyses.labels(kind=kind, verdict=verdict).inc()
        self._seconds.labels(kind=kind).observe(seconds)

    def failed(self, code: str) -> None:
        self._errors.labels(code=code).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
