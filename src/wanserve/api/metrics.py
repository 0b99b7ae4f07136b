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

from wanserve.jobs.model import JobStatus
from wanserve.jobs.store import JobStore


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


class Metrics:
    """The app's registry and the instruments its routes update."""

    def __init__(self, store: JobStore):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(JobStateCollector(store))
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
