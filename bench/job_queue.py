"""Queue speed: jobs per second end to end and pickup latency, polling against a broker.

Run: PYTHONPATH=src .venv/bin/python bench/job_queue.py [--jobs 200] [--pickups 40]
     [--workers 1,2,4] [--postgres URL] [--redis URL]

A no-op engine (it hands back a tiny ready-made MP4 at once, as an upstream engine does
when the provider is done) runs in real worker processes, so what is timed is the job
core: create, announce, claim, heartbeat, store the outputs, complete. In one run:
  sqlite-poll  the embedded default, SQLite with workers polling the database: the baseline
  pg-celery    PostgreSQL + Celery on Redis, with each worker count of --workers
Per configuration:
  pickup p50/p99  created -> in_progress, one job at a time into idle workers
  jobs/s          a burst of --jobs jobs: jobs / (last completed - first created)
Then the claim itself: one fair claim against the oldest-first query it replaced, at a
queue depth of 10 000 jobs from 100 keys (SQLite and PostgreSQL).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file shares its name with the standard library's `queue`, which multiprocessing and
# kombu import: the script's own folder must not come first on the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import create_engine as sql_engine  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

from wanserve.engines.base import GenerationRequest, VideoFile  # noqa: E402
from wanserve.engines.registry import ENGINE_MODULES, EngineRegistry  # noqa: E402
from wanserve.jobs.db import JobRow, make_engine  # noqa: E402
from wanserve.jobs.fleet import Fleet  # noqa: E402
from wanserve.jobs.model import Job, JobSpec, JobStatus, MediaRef  # noqa: E402
from wanserve.jobs.queue import CeleryQueue, DatabaseQueue, JobQueue  # noqa: E402
from wanserve.jobs.routing import next_claim  # noqa: E402
from wanserve.jobs.store import JobStore  # noqa: E402
from wanserve.jobs.worker import Worker  # noqa: E402
from wanserve.settings import Settings  # noqa: E402
from wanserve.storage.local import LocalStorage  # noqa: E402

MODEL = "bench"
SPEC = JobSpec("", "", "720P", 64, 64, 2, 1)
MEDIA = [
    MediaRef("first_frame", "bench/first.png", "image/png", width=64, height=64),
    MediaRef("last_frame", "bench/last.png", "image/png", width=64, height=64),
]


# -- the no-op engine ---------------------------------------------------------------------


class NoOpEngine:
    """Returns a copy of one tiny MP4 immediately."""

    name = "noop"

    def __init__(self, video: bytes):
        self.video = video

    def generate(self, request: GenerationRequest, context: Any) -> VideoFile:
        """The same four frames for every job."""
        path = context.work_dir / "noop.mp4"
        path.write_bytes(self.video)
        return VideoFile(path)

    def close(self) -> None:
        """Nothing held."""


def create_engine(settings: Settings, options: Mapping[str, Any]) -> NoOpEngine:
    """The registry's entry point for the `noop` engine."""
    return NoOpEngine(Path(options["video"]).read_bytes())


def tiny_mp4(path: Path) -> None:
    """Four 64x64 frames of H.264."""
    import av
    import numpy as np

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), index * 60, np.uint8))
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# -- worker processes -----------------------------------------------------------------------


def open_bench_queue(settings: Settings, prefix: str) -> JobQueue:
    """The broker queue under a throw-away prefix, or the database."""
    if settings.broker_url:
        return CeleryQueue(settings.broker_url, queue_name=prefix)
    return DatabaseQueue()


def worker_process(settings_json: str, prefix: str) -> None:
    """One worker process on the no-op engine, until SIGTERM."""
    ENGINE_MODULES["noop"] = __name__
    settings = Settings.model_validate_json(settings_json)
    store = JobStore(make_engine(settings.resolved_database_url))
    queue = open_bench_queue(settings, prefix)
    worker = Worker(
        settings,
        store,
        LocalStorage(settings.data_dir / "files"),
        EngineRegistry(settings),
        queue=queue,
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    try:
        worker.consume()
    finally:
        worker.registry.close()
        queue.close()


# -- one configuration ---------------------------------------------------------------------


@dataclass
class Result:
    name: str
    workers: int
    pickup_p50: float
    pickup_p99: float
    jobs_per_second: float


def new_job(created_at: float, owner: str = "bench") -> Job:
    """A queued job of the bench model."""
    return Job(
        id=f"video_{uuid.uuid4().hex}",
        owner=owner,
        model=MODEL,
        engine="noop",
        status=JobStatus.QUEUED,
        spec=SPEC,
        media=MEDIA,
        created_at=created_at,
    )


def percentile(values: list[float], share: float) -> float:
    """The `share` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class Bench:
    """A database, a queue and N worker processes of one configuration."""

    def __init__(self, settings: Settings, workers: int):
        self.settings = settings
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.store = JobStore.open(settings.resolved_database_url)
        self.queue = open_bench_queue(settings, self.prefix)
        context = multiprocessing.get_context("spawn")
        self.processes = [
            context.Process(target=worker_process, args=(settings.model_dump_json(), self.prefix))
            for _ in range(workers)
        ]

    def __enter__(self) -> Bench:
        for process in self.processes:
            process.start()
        fleet = Fleet(self.store.engine, clock=self.store.clock)
        deadline = time.monotonic() + 120
        while len(fleet.live(60)) < len(self.processes):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        # Every worker has loaded its engine and its consumer is ready before timing starts.
        self.burst(4 * len(self.processes))
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(30)
        if isinstance(self.queue, CeleryQueue):
            with self.queue.app.connection_for_write() as connection:
                connection.default_channel.queue_delete(self.queue.queue_for(MODEL))
        self.queue.close()
        self.store.engine.dispose()

    def submit(self) -> str:
        """Create and announce one job, as the intake does after storing media."""
        job = self.store.create(new_job(self.store.clock()))
        self.queue.publish(job.id, MODEL)
        return job.id

    def wait(self, ids: list[str], timeout: float = 300.0) -> None:
        """Until every job is completed."""
        deadline = time.monotonic() + timeout
        with self.store.engine.connect() as connection:
            while True:
                done = connection.execute(
                    select(JobRow.id).where(
                        JobRow.id.in_(ids), JobRow.status == JobStatus.COMPLETED.value
                    )
                ).all()
                connection.rollback()
                if len(done) == len(ids):
                    return
                assert time.monotonic() < deadline, f"{len(ids) - len(done)} jobs not done"
                time.sleep(0.005)

    def times(self, ids: list[str]) -> list[tuple[float, float, float]]:
        """(created, started, completed) of each job."""
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(JobRow.created_at, JobRow.started_at, JobRow.completed_at).where(
                    JobRow.id.in_(ids)
                )
            ).all()
        return [(float(c), float(s), float(d)) for c, s, d in rows]

    def pickups(self, count: int) -> list[float]:
        """Pickup latency of jobs sent one at a time, each a while after the last one."""
        latencies = []
        arrivals = random.Random(7)
        for _ in range(count):
            # Clients do not wait for the workers' poll rhythm: land anywhere in it.
            time.sleep(arrivals.uniform(0, 1.2 * self.settings.poll_interval))
            job_id = self.submit()
            self.wait([job_id])
            ((created, started, _),) = self.times([job_id])
            latencies.append(started - created)
        return latencies

    def burst(self, count: int) -> float:
        """Jobs per second for `count` jobs created at once."""
        ids = [self.submit() for _ in range(count)]
        self.wait(ids)
        times = self.times(ids)
        return count / (max(t[2] for t in times) - min(t[0] for t in times))


def run_config(name: str, settings: Settings, workers: int, jobs: int, pickups: int) -> Result:
    """Pickups, then a burst, on one configuration."""
    with Bench(settings, workers) as bench:
        latencies = bench.pickups(pickups)
        rate = bench.burst(jobs)
    return Result(name, workers, percentile(latencies, 0.5), percentile(latencies, 0.99), rate)


# -- the claim alone -------------------------------------------------------------------------


def claim_cost(
    url: str, depth: int = 10_000, keys: int = 100, claims: int = 100
) -> dict[str, tuple[float, float]]:
    """Median ms of the pick query and of the whole claim, oldest-first against fair."""
    store = JobStore.open(url)
    now = time.time()
    with store.engine.begin() as connection:
        connection.execute(
            JobRow.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "id": f"video_{index:08d}",
                    "owner": f"key-{index % keys}",
                    "model": MODEL,
                    "engine": "noop",
                    "route": MODEL,
                    "source_api": "openai",
                    "status": "queued",
                    "progress": 0,
                    "spec": SPEC.to_dict(),
                    "media": [],
                    "result": {},
                    "meta": {},
                    "engine_state": {},
                    "created_at": now + index * 1e-3,
                    "attempts": 0,
                }
                for index in range(depth)
            ],
        )
    # The claim before this work: the oldest queued job, whoever's it is.
    oldest_first = (
        select(JobRow.id)
        .where(JobRow.status == JobStatus.QUEUED.value, JobRow.route.in_([MODEL]))
        .order_by(JobRow.created_at, JobRow.id)
        .limit(1)
    )
    for _ in range(claims):  # some jobs running, as in a working fleet
        store.claim("bench", [MODEL])
    with store.engine.begin() as connection:
        connection.execute(text("ANALYZE jobs"))  # as autovacuum would after a big insert
    results = {}
    for name, query in (("oldest-first", oldest_first), ("fair", next_claim([MODEL]))):
        picks, totals = [], []
        for _ in range(claims):
            started = time.perf_counter()
            with store.engine.connect() as connection:
                job_id = connection.execute(query).scalar_one()
            picked = time.perf_counter()
            store.claim_job(job_id, "bench", [MODEL])
            picks.append(picked - started)
            totals.append(time.perf_counter() - started)
        results[name] = (statistics.median(picks) * 1000, statistics.median(totals) * 1000)
    store.engine.dispose()
    return results


# -- the run -------------------------------------------------------------------------------


def postgres_schema(url: str) -> tuple[str, Any]:
    """A throw-away schema on `url`, and a function that drops it."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sql_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return f"{url}?options=-csearch_path%3D{schema}", drop


def main() -> None:
    """Every configuration, then the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs in each burst")
    parser.add_argument("--pickups", type=int, default=40, help="jobs timed one at a time")
    parser.add_argument("--workers", default="1,2,4", help="worker counts with the broker")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    ENGINE_MODULES["noop"] = __name__
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    folder = Path(tempfile.mkdtemp(prefix="wanserve-bench-queue-"))
    video = folder / "noop.mp4"
    tiny_mp4(video)
    results: list[Result] = []
    try:
        configs: list[tuple[str, int, dict[str, Any]]] = [("sqlite-poll", 1, {})]
        configs += [
            ("pg-celery", int(n), {"database_url": "pg", "broker_url": args.redis})
            for n in args.workers.split(",")
        ]
        for name, workers, extra in configs:
            data_dir = folder / f"{name}-{workers}"
            drop = None
            if extra.get("database_url") == "pg":
                extra["database_url"], drop = postgres_schema(args.postgres)
            settings = Settings(
                data_dir=data_dir,
                models={MODEL: {"engine": "noop", "video": str(video)}},
                worker_models=[MODEL],
                encoder_preset="ultrafast",
                **extra,
            )
            files = LocalStorage(data_dir / "files")
            for ref in MEDIA:
                files.put_bytes(ref.key, b"unused by the no-op engine", "image/png")
            try:
                results.append(run_config(name, settings, workers, args.jobs, args.pickups))
            finally:
                if drop is not None:
                    drop()
            print(f"  {results[-1]}", flush=True)
        pg_url, drop = postgres_schema(args.postgres)
        try:
            claims = {
                "sqlite": claim_cost(f"sqlite:///{folder / 'claims.db'}"),
                "postgresql": claim_cost(pg_url),
            }
        finally:
            drop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = results[0]
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}\n")
    print("| configuration | workers | pickup p50 | pickup p99 | jobs/s | jobs/s ÷ baseline |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.name} | {r.workers} | {r.pickup_p50 * 1000:.0f} ms | "
            f"{r.pickup_p99 * 1000:.0f} ms | {r.jobs_per_second:.1f} | "
            f"{r.jobs_per_second / base.jobs_per_second:.2f} |"
        )
    print("\n| database | query | oldest-first | fair | fair ÷ oldest-first |")
    print("|---|---|---|---|---|")
    for database, cost in claims.items():
        (plain_pick, plain_claim), (fair_pick, fair_claim) = cost["oldest-first"], cost["fair"]
        print(
            f"| {database} | pick | {plain_pick:.2f} ms | {fair_pick:.2f} ms | "
            f"{fair_pick / plain_pick:.1f} |"
        )
        print(
            f"| {database} | pick + claim | {plain_claim:.2f} ms | {fair_claim:.2f} ms | "
            f"{fair_claim / plain_claim:.1f} |"
        )


if __name__ == "__main__":
    main()
