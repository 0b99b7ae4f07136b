"""`--gpus`: one worker process per GPU group, pinned before torch loads, warm at start."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from wanserve.settings import Settings


@pytest.mark.parametrize(
    ("gpus", "groups", "workers"),
    [("0,1,2,3", ["0", "1", "2", "3"], 4), ("0+1, 2+3", ["0+1", "2+3"], 2), ("", [], 1)],
)
def test_gpu_groups_set_the_worker_count(gpus: str, groups: list[str], workers: int) -> None:
    settings = Settings(gpus=gpus)
    assert (settings.gpus, settings.workers) == (groups, workers)


@pytest.mark.parametrize(("gpus", "workers"), [("cuda:0", None), ("0,1", 3), ("0,,x", None)])
def test_bad_gpu_settings_are_refused(gpus: str, workers: int | None) -> None:
    extra = {} if workers is None else {"workers": workers}
    with pytest.raises(ValidationError):
        Settings(gpus=gpus, **extra)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


def test_pinning_happens_before_torch_and_refuses_after() -> None:
    pytest.importorskip("torch")
    pinned = _python(
        "from wanserve.jobs.pool import pin_devices; pin_devices('2+3');"
        "import os, torch; print(os.environ['CUDA_VISIBLE_DEVICES'], torch.cuda.device_count())"
    )
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.split() == ["2,3", "0"]  # pinned; no CUDA on this machine
    late = _python("import torch; from wanserve.jobs.pool import pin_devices; pin_devices('0')")
    assert late.returncode != 0 and "before torch is imported" in late.stderr


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)


@pytest.mark.slow
def test_worker_gpus_starts_one_pinned_warm_process_per_gpu(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    process = subprocess.Popen(
        [sys.executable, "-m", "wanserve.cli", "worker", "--gpus", "3,5",
         "--data-dir", str(tmp_path)],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True).start()
    pinned: dict[str, str] = {}
    loaded: set[str] = set()
    deadline = time.monotonic() + 120
    try:
        while len(pinned) < 2 or len(loaded) < 2:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if "pinned to CUDA_VISIBLE_DEVICES=" in line:
                pid = line.split("worker process ")[1].split()[0]
                pinned[pid] = line.rsplit("=", 1)[1].strip()
            if "engine keyframe loaded" in line:
                loaded.add(line)
        # Warm before any job: each process loaded its engine at start.
        assert sorted(pinned.values()) == ["3", "5"] and len(set(pinned)) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
