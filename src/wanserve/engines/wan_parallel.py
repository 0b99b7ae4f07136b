"""One video over several devices: diffusers' context parallelism (Ulysses) on N ranks.

This process is rank 0 and runs the job; ranks 1..N-1 are helper processes started here,
each holding the same pipeline warm on its own device. Every pipeline call is sent to the
helpers over a pipe, then all ranks run it together (the transformer's attention is split
by heads across them with all-to-all collectives). After each denoising step rank 0
broadcasts whether to go on, so a cancel stops every rank at the same step.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanserve.engines.wan_pipeline import LoadedPipeline, device_and_dtype, transformers_of
from wanserve.errors import EngineError

if TYPE_CHECKING:
    from wanserve.engines.diffusers import DiffusersSettings

logger = logging.getLogger(__name__)

READY_TIMEOUT = 3600.0  # loading a 14B checkpoint from a slow disk can take many minutes
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


class _Stopped(Exception):
    """Rank 0 said to stop this call (its job was cancelled or failed)."""


@contextmanager
def _cpu_ranks(device: str) -> Iterator[None]:
    """Let diffusers place CPU ranks.

    diffusers 0.42.1 (`ModelMixin._resolve_parallel_config`) puts rank r on device
    `r % torch.accelerator.device_count()`, which divides by zero on a CPU-only torch.
    Every CPU rank uses the one CPU device, so the count is 1 there while it runs.
    """
    import torch

    if device != "cpu":
        yield
        return
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = count


def enable_context_parallel(pipe: Any, degree: int, device: str) -> None:
    """Split every expert's attention over `degree` ranks (Ulysses)."""
    from diffusers import ContextParallelConfig

    with _cpu_ranks(device):
        for transformer in transformers_of(pipe):
            transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree))


def _select_device(rank: int, device: str) -> None:
    """Rank r works on the r-th visible GPU (set before its pipeline loads)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.set_device(rank)


def _init_group(rank: int, degree: int, init_file: str, device: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "nccl" if device.startswith("cuda") else "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=degree,
        timeout=COLLECTIVE_TIMEOUT,
    )


def _go_on(stop: bool, device: str) -> bool:
    """Rank 0's verdict after a step, the same on every rank."""
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if stop else 0], device=device)
    dist.broadcast(flag, src=0)
    return not bool(flag.item())


def run_call(pipe: Any, arguments: dict[str, Any], seed: int, on_step: Callable[[int], Any]) -> Any:
    """Run one pipeline call with a seeded generator, calling `on_step` after each step."""
    import torch

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        on_step(step)
        return {}

    generator = torch.Generator("cpu").manual_seed(seed)
    try:
        return pipe(**arguments, generator=generator, callback_on_step_end=on_step_end).frames[0]
    finally:
        pipe.maybe_free_model_hooks()


def _helper_main(rank: int, degree: int, init_file: str, settings_json: str, conn: Any) -> None:
    """A helper rank: load the pipeline, then run each call rank 0 sends until told to stop."""
    from diffusers import WanImageToVideoPipeline

    from wanserve.engines.diffusers import DiffusersSettings
    from wanserve.engines.wan_layouts import read_layout
    from wanserve.engines.wan_pipeline import load_pipeline
    from wanserve.logs import configure_logging

    configure_logging()
    settings = DiffusersSettings.model_validate_json(settings_json)
    device, _ = device_and_dtype(settings)
    try:
        _select_device(rank, device)
        assert settings.model is not None
        layout = read_layout(settings.model).tuned(settings.layout_overrides())
        loaded = load_pipeline(WanImageToVideoPipeline, settings.model, settings, layout)
        conn.send(("loaded", None))
        _init_group(rank, degree, init_file, device)
        enable_context_parallel(loaded.pipe, degree, device)
    except Exception as exc:
        logger.exception("context-parallel rank %d failed to load", rank)
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))

    def on_step(step: int) -> None:
        if not _go_on(False, device):
            raise _Stopped()

    while (message := conn.recv()) is not None:
        arguments, seed = message
        try:
            run_call(loaded.pipe, arguments, seed, on_step)
        except _Stopped:
            pass
        except Exception:
            logger.exception("context-parallel rank %d: call failed", rank)


class ParallelRunner:
    """Rank 0 of a context-parallel group; `call` runs one pipeline call on every rank."""

    def __init__(
        self, settings: DiffusersSettings, degree: int, load: Callable[[], LoadedPipeline]
    ):
        import torch.distributed as dist

        if dist.is_initialized():
            raise EngineError("only one context-parallel model can be served per worker")
        self.degree = degree
        self._broken = False
        self._folder = tempfile.TemporaryDirectory(prefix="wanserve-cp-")
        init_file = str(Path(self._folder.name) / "rendezvous")
        spawn = multiprocessing.get_context("spawn")
        self._helpers: list[tuple[Any, Connection]] = []
        for rank in range(1, degree):
            ours, theirs = spawn.Pipe()
            process = spawn.Process(
                target=_helper_main,
                args=(rank, degree, init_file, settings.model_dump_json(), theirs),
                name=f"wanserve-cp-rank{rank}",
                daemon=True,
            )
            process.start()
            self._helpers.append((process, ours))
        try:
            _select_device(0, device_and_dtype(settings)[0])
            self.loaded = load()
            # Every rank has loaded before any joins the group: a rank that fails to load
            # is reported here instead of leaving the others waiting at the rendezvous.
            self._wait_for("loaded")
            _init_group(0, degree, init_file, self.loaded.device)
            enable_context_parallel(self.loaded.pipe, degree, self.loaded.device)
            self._wait_for("ready")
        except BaseException:
            self.close()
            raise
        logger.info("context parallelism over %d ranks ready", degree)

    def _wait_for(self, expected: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for rank, (process, conn) in enumerate(self._helpers, start=1):
            while not conn.poll(1.0):
                if not process.is_alive() or time.monotonic() > deadline:
                    raise EngineError(f"context-parallel rank {rank} did not start")
            status, detail = conn.recv()
            if status != expected:
                logger.error("context-parallel rank %d failed to load: %s", rank, detail)
                raise EngineError(f"context-parallel rank {rank} failed to load the model")

    def call(self, arguments: dict[str, Any], seed: int, on_step: Callable[[int], Any]) -> Any:
        """Run the call on every rank; rank 0's frames are the result."""
        if self._broken:
            raise EngineError(
                "the context-parallel ranks fell out of step after a failure; restart the worker"
            )
        for process, conn in self._helpers:
            if not process.is_alive():
                self._broken = True
                raise EngineError("a context-parallel rank exited; restart the worker")
            conn.send((arguments, seed))
        device = self.loaded.device
        stopped_together = False

        def step(index: int) -> None:
            nonlocal stopped_together
            try:
                on_step(index)
            except BaseException:
                stopped_together = True
                _go_on(True, device)
                raise
            _go_on(False, device)

        try:
            return run_call(self.loaded.pipe, arguments, seed, step)
        except BaseException:
            if not stopped_together:
                # Raised outside the step callback: the other ranks may sit in a collective.
                self._broken = True
            raise

    def close(self) -> None:
        """Stop the helper ranks and leave the process group."""
        import torch.distributed as dist

        for _, conn in self._helpers:
            with suppress(OSError):
                conn.send(None)
        for process, _ in self._helpers:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
        self._helpers = []
        if dist.is_initialized():
            dist.destroy_process_group()
        self._folder.cleanup()
