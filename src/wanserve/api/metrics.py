"""Prometheus metrics of one app: its own registry, job counts read from the store.

Workers run in other processes (often other machines), so job states are counted in the
database at scrape time rather than in per-process counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.delivery import Outbox
from wanserve.jobs.fleet import Fleet
from wanserve.jobs.model import JobStatus
from wanserve.jobs.stages import StageMetrics
from wanserve.jobs.store import JobStore
from wanserve.jobs.watch import ChangeFeed
from wanserve.jobs.webhooks import DELIVERED, FAILED, GONE, PENDING


class JobStateCollector(Collector):
    """`wanserve_jobs{status}`: jobs in each state, from the store."""

    def __init__(self, store: JobStore):
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge sample per job state."""
        family = GaugeMetricFamily("wanserve_jobs", "Jobs in each state.", labels=["status"])
        counts = self.store.count_by_status()
        for status in JobStatus:
            family.add_metric([status.value], counts.get(status.value, 0))
        yield family


class WebhookCollector(Collector):
    """`wanserve_webhook_deliveries{state}`: outbox rows by outcome, from the store.

    Every worker process sends webhooks; the outbox is where they all record the outcome.
    """

    def __init__(self, outbox: Outbox):
        self.outbox = outbox

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge sample per delivery state."""
        family = GaugeMetricFamily(
            "wanserve_webhook_deliveries",
            "Webhook deliveries by state: pending, delivered, gone (410), failed (gave up).",
            labels=["state"],
        )
        counts = self.outbox.counts()
        for state in (PENDING, DELIVERED, GONE, FAILED):
            family.add_metric([state], counts.get(state, 0))
        yield family


class StageCollector(Collector):
    """`wanserve_stage_seconds{stage}`: queue wait, generate, encode, store, fleet-wide."""

    def __init__(self, stages: StageMetrics):
        self.stages = stages

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """One histogram sample set per stage seen so far."""
        family = HistogramMetricFamily(
            "wanserve_stage_seconds",
            "How long each stage of a job took (every worker, from the store).",
            labels=["stage"],
        )
        for stage, (buckets, total) in sorted(self.stages.histograms().items()):
            family.add_metric([stage], buckets, total)
        yield family


class FleetCollector(Collector):
    """Per served model: live workers, those with it loaded, and its queue's oldest wait."""

    def __init__(self, fleet: Fleet, registry: EngineRegistry, ttl: float):
        self.fleet = fleet
        self.registry = registry
        self.ttl = ttl

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Four gauges by model; `wanserve_model_workers` 0 means nothing can run it."""
        families = {
            "workers": GaugeMetricFamily(
                "wanserve_model_workers", "Live workers serving the model.", labels=["model"]
            ),
            "loaded": GaugeMetricFamily(
                "wanserve_model_workers_loaded",
                "Live workers with the model's engine loaded.",
                labels=["model"],
            ),
            "queued": GaugeMetricFamily(
                "wanserve_model_queued", "Jobs waiting in the model's queue.", labels=["model"]
            ),
            "oldest_wait": GaugeMetricFamily(
                "wanserve_model_oldest_wait_seconds",
                "How long the model's oldest queued job has waited (0: none queued).",
                labels=["model"],
            ),
        }
        for model, service in self.fleet.service(self.registry.routes, self.ttl).items():
            families["workers"].add_metric([model], service.workers)
            families["loaded"].add_metric([model], service.loaded)
            families["queued"].add_metric([model], service.queued)
            families["oldest_wait"].add_metric([model], service.oldest_wait or 0.0)
        yield from families.values()


class Metrics:
    """The app's registry and the instruments its routes update."""

    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        engines: EngineRegistry,
        ttl: float,
        *,
        feed: ChangeFeed | None = None,
    ):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(JobStateCollector(store))
        self.registry.register(FleetCollector(fleet, engines, ttl))
        self.registry.register(WebhookCollector(Outbox(store.engine, clock=store.clock)))
        self.registry.register(StageCollector(StageMetrics(store.engine)))
        # Media is fetched by the API process that takes the create: counted here.
        self.fetch = Histogram(
            "wanserve_fetch_seconds",
            "Time to fetch one media URL at create.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.fetch_failures = Counter(
            "wanserve_fetch_failures",
            "Media URLs refused or failed at create, by reason (the error code).",
            ["reason"],
            registry=self.registry,
        )
        streams = Gauge(
            "wanserve_event_streams",
            "Open GET /v1/videos/{id}/events streams in this API process.",
            registry=self.registry,
        )
        if feed is not None:
            streams.set_function(lambda: feed.open_streams)
        self.created = Counter(
            "wanserve_jobs_created",
            "Jobs accepted, by model and API family.",
            ["model", "api"],
            registry=self.registry,
        )
        self.requests = Histogram(
            "wanserve_http_request_seconds",
            "HTTP request latency by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def fetched(self, seconds: float) -> None:
        """Intake's observer: one media URL fetched."""
        self.fetch.observe(seconds)

    def fetch_failed(self, reason: str) -> None:
        """Intake's observer: one media URL refused or failed."""
        self.fetch_failures.labels(reason).inc()
