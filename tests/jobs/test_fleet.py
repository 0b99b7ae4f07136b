"""The worker registry on SQLite and PostgreSQL, and what a worker reports of itself."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from test_job_store import make_job

from helpers import ManualClock
from wanserve.engines.registry import EngineRegistry
from wanserve.errors import ModelNotFound
from wanserve.jobs.fleet import Fleet, WorkerInfo, unserved
from wanserve.jobs.store import JobStore
from wanserve.jobs.worker import Worker
from wanserve.settings import Settings
from wanserve.storage.local import LocalStorage

TTL = 30.0
MODELS = {"a": {"engine": "keyframe"}, "b": {"engine": "diffusers"}}


def info(worker_id: str, models: list[str], clock: ManualClock, **engines: str) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="box-1",
        pid=123,
        models=models,
        device="cpu",
        engines={m: engines.get(m, "not_loaded") for m in models},
        started_at=clock.now,
    )


def worker_on(store: JobStore, tmp_path: Path, **settings: object) -> Worker:
    config = Settings(data_dir=tmp_path, models=MODELS, poll_interval=0.05, **settings)
    return Worker(config, store, LocalStorage(tmp_path / "files"), EngineRegistry(config))


def test_live_workers_are_listed_with_their_job_and_dead_ones_dropped(
    store: JobStore, clock: ManualClock
):
    fleet = Fleet(store.engine, clock=clock)
    fleet.report(info("w1", ["a"], clock, a="loaded"))
    fleet.report(info("w2", ["a", "b"], clock))
    job = store.create(make_job())
    store.claim_job(job.id, "w1")
    listed = {w.id: w for w in fleet.live(TTL)}
    assert listed["w1"].current_job == job.id and listed["w1"].engines == {"a": "loaded"}
    assert listed["w2"].current_job is None and listed["w2"].models == ["a", "b"]
    clock.advance(TTL / 2)
    fleet.report(info("w1", ["a"], clock, a="loaded"))  # w1 beats, w2 has died
    clock.advance(TTL / 2 + 1)
    assert [w.id for w in fleet.live(TTL)] == ["w1"]
    assert fleet.drop_dead(TTL) == 1
    fleet.leave("w1")
    assert fleet.live(TTL) == [] and fleet.drop_dead(0) == 0


def test_service_counts_workers_loaded_engines_and_waits_per_model(
    store: JobStore, clock: ManualClock
):
    fleet = Fleet(store.engine, clock=clock)
    fleet.report(info("w1", ["a"], clock, a="loaded"))
    fleet.report(info("w2", ["a"], clock))
    store.create(replace(make_job(created_at=clock.now - 40), model="b", route="b"))
    store.create(replace(make_job(created_at=clock.now - 5), model="b", route="b"))
    report = fleet.service(["a", "b"], TTL)
    assert (report["a"].workers, report["a"].loaded, report["a"].queued) == (2, 1, 0)
    assert report["a"].oldest_wait is None
    assert (report["b"].workers, report["b"].queued, report["b"].oldest_wait) == (0, 2, 40.0)
    assert unserved(report) == ["model b has no live worker; 2 queued, the oldest for 40 s"]


def test_a_consuming_worker_is_registered_until_it_stops(store: JobStore, tmp_path: Path):
    worker = worker_on(store, tmp_path, worker_models=["a"])
    thread = threading.Thread(target=worker.consume, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (listed := worker.fleet.live(TTL)):
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    assert [(w.id, w.models) for w in listed] == [(worker.worker_id, ["a"])]
    # Warm start: its engine loads before any job, and the row says so when it has.
    while worker.fleet.live(TTL)[0].engines != {"a": "loaded"}:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    worker.stopping.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and worker.fleet.live(TTL) == []


def test_a_worker_of_one_model_neither_claims_nor_loads_another(store: JobStore, tmp_path: Path):
    worker = worker_on(store, tmp_path, worker_models=["a"])
    assert worker.warm_models() == ["a"]  # WANSERVE_PRELOAD=all means all of its own
    assert worker_on(store, tmp_path, worker_models=["a"], preload=["b"]).warm_models() == []
    job = store.create(replace(make_job(), model="b", route="b", engine="diffusers"))
    assert worker.run_once() is False
    assert worker.run_job(job.id, "b") is False  # a message on a queue it does not serve
    assert worker.registry.loaded() == {}
    assert store.get(job.id).attempts == 0


def test_by_default_a_worker_serves_every_configured_model(store: JobStore, tmp_path: Path):
    assert worker_on(store, tmp_path).routes == ["wan2.7-i2v", "a", "b"]
    with pytest.raises(ModelNotFound):
        worker_on(store, tmp_path, worker_models=["a", "nope"])


def test_an_engine_that_fails_to_load_is_reported_failed(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("WANSERVE_DASHSCOPE_API_KEY", raising=False)
    config = Settings(data_dir=tmp_path, models={"hosted": {"engine": "dashscope"}})  # no key
    registry = EngineRegistry(config)
    worker = Worker(config, store, LocalStorage(tmp_path / "files"), registry, routes=["hosted"])
    thread = threading.Thread(target=worker.consume, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while worker.fleet.service(["hosted"], TTL)["hosted"].failed != 1:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        assert worker.fleet.live(TTL)[0].engines == {"hosted": "failed"}
    finally:
        worker.stopping.set()
        thread.join(timeout=10)
