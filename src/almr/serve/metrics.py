"""Prometheus metrics of one server (its own registry, so tests can build many apps)."""

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "almr_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.first_token = Histogram(
            "almr_time_to_first_token_seconds",
            "Request to first text",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "almr_request_seconds",
            "Request to last byte of a generation",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter("almr_tokens", "Tokens processed", ["kind"], registry=self.registry)
        self.queued = Gauge("almr_queued_requests", "Requests waiting for the engine", registry=self.registry)
        self.batches = Gauge("almr_engine_batches", "Generate calls made", registry=self.registry)
        self.sequences = Gauge("almr_engine_batched_sequences", "Sequences in them", registry=self.registry)

    def watch_engine(
        self, queued: Callable[[], float], batches: Callable[[], float], sequences: Callable[[], float]
    ) -> None:
        self.queued.set_function(queued)
        self.batches.set_function(batches)
        self.sequences.set_function(sequences)

    def text(self) -> bytes:
        return generate_latest(self.registry)
