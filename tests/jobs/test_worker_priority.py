"""Worker processes run nicer than the API, so polls stay quick while a render runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wanserve.jobs.pool import WorkerPool
from wanserve.settings import Settings


def _nice(pid: int) -> int:
    # Field 19 of /proc/PID/stat, counted after the parenthesised command name.
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


@pytest.mark.slow
def test_pool_workers_run_worker_nice_steps_nicer(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", worker_nice=7, preload=["none"])
    pool = WorkerPool(settings, 1)
    pool.start()
    try:
        (pid,) = pool.pids
        mine = os.nice(0)
        deadline = time.monotonic() + 120
        while _nice(pid) != mine + 7:
            assert time.monotonic() < deadline, f"worker nice {_nice(pid)}, API {mine}"
            time.sleep(0.1)
    finally:
        pool.stop(10)
