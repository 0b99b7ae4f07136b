"""The fleet through HTTP: `/v1/workers`, readiness and metrics per model, fair share,
queue time-outs; with real workers (in threads) on the keyframe engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers import ManualClock, seed_body
from netguard import loopback_fetcher
from wanserve.api.app import create_app
from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.model import JobStatus
from wanserve.jobs.store import JobStore
from wanserve.jobs.worker import Worker
from wanserve.settings import Settings
from wanserve.storage import open_storage

ADMIN = {"Authorization": "Bearer admin-secret"}
KEY_A = {"Authorization": "Bearer key-a"}
KEY_B = {"Authorization": "Bearer key-b"}


@pytest.fixture
def fleet_settings(tmp_path: Path) -> Settings:
    """Two keys, an admin key, and a model with a queue time-out that no worker serves."""
    return Settings(
        data_dir=tmp_path / "data",
        media_allowed_hosts=["127.0.0.1"],
        poll_interval=0.05,
        encoder_preset="ultrafast",
        workers=0,
        api_keys=["key-a", "key-b"],
        admin_key="admin-secret",
        models={"orphan": {"engine": "keyframe", "queue_timeout": 30}},
    )


class Fleet:
    """An app and workers sharing one store (on `clock` when given)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = JobStore.open(settings.resolved_database_url, clock=clock)
        self.storage = open_storage(settings.resolved_storage_url, settings)
        app = create_app(
            settings,
            store=self.store,
            storage=self.storage,
            fetcher=loopback_fetcher(settings),
            workers=0,
        )
        self.client = TestClient(app)
        self.threads: list[tuple[Worker, threading.Thread]] = []

    def worker(self, models: list[str]) -> Worker:
        registry = EngineRegistry(self.settings)
        return Worker(self.settings, self.store, self.storage, registry, routes=models)

    def start(self, worker: Worker) -> None:
        thread = threading.Thread(target=worker.consume, daemon=True)
        thread.start()
        self.threads.append((worker, thread))

    def close(self) -> None:
        for worker, _ in self.threads:
            worker.stopping.set()
        for worker, thread in self.threads:
            thread.join(timeout=30)
            worker.registry.close()
        self.client.close()
        self.store.engine.dispose()


@pytest.fixture
def make_fleet(fleet_settings: Settings) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(clock: Callable[[], float] = time.time) -> Fleet:
        made.append(Fleet(fleet_settings, clock))
        return made[-1]

    yield make
    for fleet in made:
        fleet.close()


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_the_worker_list_needs_the_admin_key(make_fleet, fleet_settings):
    client = make_fleet().client
    assert client.get("/v1/workers").status_code == 401
    refused = client.get("/v1/workers", headers=KEY_A)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/workers", headers=ADMIN).json() == {"object": "list", "data": []}
    unset = create_app(fleet_settings.model_copy(update={"admin_key": None}), workers=0)
    with TestClient(unset) as other:
        answer = other.get("/v1/workers", headers=ADMIN)
    assert answer.status_code == 401 and "WANSERVE_ADMIN_KEY" in answer.json()["error"]["message"]


def test_live_workers_are_listed_and_readiness_names_unserved_models(make_fleet):
    clock = ManualClock()
    fleet = make_fleet(clock)
    worker = fleet.worker(["wan2.7-i2v"])
    worker.fleet.report(worker.presence())
    (listed,) = fleet.client.get("/v1/workers", headers=ADMIN).json()["data"]
    assert listed["id"] == worker.worker_id and listed["models"] == ["wan2.7-i2v"]
    assert listed["engines"] == {"wan2.7-i2v": "not_loaded"} and listed["current_job"] is None
    assert listed["device"] == "cpu"
    ready = fleet.client.get("/readyz")
    assert ready.status_code == 200  # the API still takes jobs: they wait for a worker
    body = ready.json()
    assert body["models"]["wan2.7-i2v"] == {
        "workers": 1,
        "loaded": 0,
        "loading": 0,
        "failed": 0,
        "queued": 0,
        "oldest_wait_seconds": None,
    }
    assert body["models"]["orphan"]["workers"] == 0
    assert body["warnings"] == ["model orphan has no live worker"]
    clock.advance(fleet.settings.job_lease + 1)  # its beats stopped: a dead worker
    assert fleet.client.get("/v1/workers", headers=ADMIN).json()["data"] == []
    assert fleet.client.get("/readyz").json()["models"]["wan2.7-i2v"]["workers"] == 0


def test_a_job_no_worker_serves_shows_in_readiness_then_times_out(make_fleet, media_server):
    clock = ManualClock()
    fleet = make_fleet(clock)
    video = fleet.client.post(
        "/v1/videos", headers=KEY_A, json=seed_body(media_server, model="orphan")
    ).json()
    assert video["status"] == "queued"
    clock.advance(20)
    ready = fleet.client.get("/readyz").json()
    assert ready["models"]["orphan"]["queued"] == 1
    assert ready["models"]["orphan"]["oldest_wait_seconds"] >= 20
    assert ready["warnings"][0].startswith("model orphan has no live worker; 1 queued")
    metrics = fleet.client.get("/metrics").text
    assert 'wanserve_model_workers{model="orphan"} 0.0' in metrics
    assert 'wanserve_model_queued{model="orphan"} 1.0' in metrics
    # Any worker (this one serves another model) applies the deadline.
    fleet.worker(["wan2.7-i2v"]).apply_deadlines()
    assert fleet.client.get(f"/v1/videos/{video['id']}", headers=KEY_A).json()["status"] == "queued"
    clock.advance(11)
    fleet.worker(["wan2.7-i2v"]).apply_deadlines()
    failed = fleet.client.get(f"/v1/videos/{video['id']}", headers=KEY_A).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"


@pytest.mark.slow
def test_key_b_starts_before_key_a_fifth_job(make_fleet, media_server):
    fleet = make_fleet()
    small = seed_body(media_server, size="320x240")
    a_ids = [
        fleet.client.post("/v1/videos", headers=KEY_A, json=small).json()["id"]
        for _ in range(10)
    ]
    b_id = fleet.client.post("/v1/videos", headers=KEY_B, json=small).json()["id"]
    worker = fleet.worker(["wan2.7-i2v"])
    fleet.start(worker)
    wait_for(lambda: fleet.store.status_of(b_id) is JobStatus.COMPLETED)

    def listed() -> dict:
        (row,) = fleet.client.get("/v1/workers", headers=ADMIN).json()["data"]
        return row

    wait_for(lambda: listed()["engines"] == {"wan2.7-i2v": "loaded"}, timeout=10)
    wait_for(lambda: listed()["current_job"] in a_ids, timeout=30)
    worker.stopping.set()
    b_started = fleet.store.get(b_id).started_at
    fifth = fleet.store.get(a_ids[4]).started_at
    assert fifth is None or b_started < fifth
    started = [i for i in a_ids if fleet.store.get(i).started_at is not None]
    assert started == a_ids[: len(started)]  # oldest first within a key
