"""Worker processes started by `wanserve serve`, restarted if they die."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.context import SpawnProcess
from typing import Any

from wanserve.settings import Settings

logger = logging.getLogger(__name__)


def pin_devices(gpus: str) -> None:
    """Show this process only `gpus` ("0" or "0+1"); must run before torch is imported."""
    if "torch" in sys.modules:
        # CUDA reads the variable once, when torch initialises it: too late to pin.
        raise RuntimeError("pin_devices must run before torch is imported")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus.replace("+", ",")


def worker_main(settings_json: str, gpus: str | None = None) -> None:
    """Entry point of one worker process: pin its GPUs, warm up, run jobs until SIGTERM."""
    if gpus is not None:
        pin_devices(gpus)
    from wanserve.jobs.runtime import build_worker
    from wanserve.logs import configure_logging

    configure_logging()
    settings = Settings.model_validate_json(settings_json)
    lower_priority(settings.worker_nice)
    if gpus is not None:
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        logger.info("worker process %s pinned to CUDA_VISIBLE_DEVICES=%s", os.getpid(), visible)
    worker = build_worker(settings, migrate=False)
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stopping.set())
    threading.Thread(target=_stop_with_parent, args=(worker.stopping,), daemon=True).start()
    try:
        worker.consume()
    finally:
        worker.registry.close()
        worker.queue.close()


def lower_priority(nice: int) -> None:
    """Make this worker process `nice` steps nicer (see `Settings.worker_nice`)."""
    if nice:
        os.nice(nice)


def _stop_with_parent(stopping: threading.Event) -> None:
    # A server killed with SIGKILL cannot stop its workers; they notice they were orphaned
    # and hand their job back instead of running on unsupervised.
    parent = os.getppid()
    while not stopping.wait(1.0):
        if os.getppid() != parent:
            stopping.set()


class WorkerPool:
    """A fixed number of worker processes, each replaced when it exits unexpectedly.

    With `settings.gpus`, worker i is pinned to GPU group i (and replaced on the same one).
    """

    def __init__(self, settings: Settings, count: int):
        if settings.gpus and count != len(settings.gpus):
            raise ValueError(f"{len(settings.gpus)} GPU groups need {len(settings.gpus)} workers")
        self.settings = settings
        self.count = count
        # Spawn, not fork: the parent runs an event loop and threads that must not be copied.
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[SpawnProcess] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def _spawn(self, index: int) -> SpawnProcess:
        gpus = self.settings.gpus[index] if self.settings.gpus else None
        process = self._context.Process(
            target=worker_main,
            args=(self.settings.to_json(), gpus),
            name=f"wanserve-worker-gpu{gpus}" if gpus else "wanserve-worker",
        )
        process.start()
        logger.info("worker process %s started%s", process.pid, f" on GPU {gpus}" if gpus else "")
        return process

    def start(self) -> None:
        """Start the workers and a thread that replaces any that die."""
        self._processes = [self._spawn(index) for index in range(self.count)]
        self._watcher = threading.Thread(target=self._watch, name="worker-pool", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for index, process in enumerate(self._processes):
                if not process.is_alive() and not self._stopping.is_set():
                    logger.error(
                        "worker process %s exited (%s); restarting", process.pid, process.exitcode
                    )
                    self._processes[index] = self._spawn(index)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop (their jobs go back to the queue), then wait.

        `timeout` bounds the whole wait, however many workers there are; those still
        running then are killed (their jobs come back when their lease runs out).
        """
        self._stopping.set()
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():
                process.kill()
                process.join()
        if self._watcher is not None:
            self._watcher.join()

    @property
    def pids(self) -> list[Any]:
        """Process ids of the current workers."""
        return [p.pid for p in self._processes]
