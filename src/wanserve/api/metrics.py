"""Prometheus metrics of one app: its own registry, job counts read from the store.

Workers run in other processes (often other machines), so job states are counted in the
database at scrape time rather than in per-process counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.delivery import Outbox
from wanserve.jobs.fleet import Fleet
from wanserve.jobs.model import JobStatus
from wanserve.jobs.store import JobStore
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

    def __init__(self, store: JobStore, fleet: Fleet, engines: EngineRegistry, ttl: float):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(JobStateCollector(store))
        self.registry.register(FleetCollector(fleet, engines, ttl))
        self.registry.register(WebhookCollector(Outbox(store.engine, clock=store.clock)))
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
