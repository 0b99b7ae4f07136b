"""The `wanserve` command: `serve`, `worker` and `generate`."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from wanserve.logs import configure_logging
from wanserve.settings import Settings

logger = logging.getLogger("wanserve")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name)
        for name in (
            "data_dir",
            "database_url",
            "storage_url",
            "engine",
            "workers",
            "gpus",
            "api_workers",
        )
        if getattr(args, name, None) is not None
    }
    if getattr(args, "models", None) is not None:
        overrides["worker_models"] = args.models
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    """Run the API (and its in-process workers) under uvicorn."""
    import uvicorn

    from wanserve.api.app import create_app

    settings = _settings(args)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "proxy_headers": True,
        # Requests still running (or still sending their body) when SIGTERM comes get this
        # long; then they are cancelled and the worker processes are stopped.
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_timeout),
    }
    if settings.api_workers > 1:
        return _serve_processes(settings, args.log_level, options)
    app = create_app(settings)
    logger.info(
        "serving on http://%s:%d (data in %s)", args.host, args.port, settings.data_dir.resolve()
    )
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    handle_exit = server.handle_exit

    def end_streams_then_exit(sig: int, frame: FrameType | None) -> None:
        # uvicorn waits for open responses before shutting down: event streams, which
        # never end by themselves, are ended first.
        app.state.services.feed.close()
        handle_exit(sig, frame)

    server.handle_exit = end_streams_then_exit  # type: ignore[method-assign]
    server.run()
    return 0


def _serve_processes(settings: Settings, log_level: str, options: dict[str, Any]) -> int:
    """`serve --api-workers N`: N API processes on one socket (uvicorn's supervisor), and
    the job workers started once beside them, not once per API process."""
    import uvicorn

    from wanserve.api.app import API_SETTINGS_ENV
    from wanserve.jobs.pool import WorkerPool
    from wanserve.jobs.runtime import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    open_store(settings).engine.dispose()  # migrate once, before the processes start
    os.environ[API_SETTINGS_ENV] = settings.to_json()
    os.environ["WANSERVE_LOG_LEVEL"] = log_level
    pool = WorkerPool(settings, settings.workers) if settings.workers else None
    if pool:
        pool.start()
    logger.info(
        "serving on http://%s:%d with %d API processes (data in %s)",
        options["host"],
        options["port"],
        settings.api_workers,
        settings.data_dir.resolve(),
    )
    try:
        uvicorn.run(
            "wanserve.api.app:api_process_app",
            factory=True,
            workers=settings.api_workers,
            **options,
        )
    finally:
        if pool:
            pool.stop(settings.shutdown_timeout)
    return 0


def worker(args: argparse.Namespace) -> int:
    """Run worker loops (from the broker when one is set) against the database and storage."""
    from wanserve.jobs.pool import lower_priority
    from wanserve.jobs.runtime import build_worker

    settings = _settings(args)
    if settings.gpus:
        return _worker_pool(settings, len(settings.gpus))
    if args.concurrency > 1:
        return _worker_pool(settings, args.concurrency)
    lower_priority(settings.worker_nice)
    runner = build_worker(settings)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: runner.stopping.set())
    try:
        runner.consume()
    finally:
        runner.registry.close()
        runner.queue.close()
    return 0


def _worker_pool(settings: Settings, count: int) -> int:
    import threading

    from wanserve.jobs.pool import WorkerPool
    from wanserve.jobs.runtime import open_store

    open_store(settings).engine.dispose()  # migrate once, before the processes start
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    pool = WorkerPool(settings, count)
    pool.start()
    stopping.wait()
    pool.stop(settings.shutdown_timeout)
    return 0


class _LocalContext:
    """An engine context for one video made outside any job store."""

    def __init__(self, work_dir: Path, bar: Any):
        self.work_dir = work_dir
        self._bar = bar
        self._state: dict[str, Any] = {}

    def report_progress(self, fraction: float) -> None:
        self._bar.n = max(self._bar.n, min(100, int(fraction * 100)))
        self._bar.refresh()

    def raise_if_cancelled(self) -> None:
        """Ctrl-C is the only way to cancel here, and it raises by itself."""

    @property
    def state(self) -> Mapping[str, Any]:
        return self._state

    def save_state(self, state: Mapping[str, Any]) -> None:
        self._state = dict(state)


def _media_input(path: str, kind: str) -> Any:
    from wanserve.engines.base import MediaInput
    from wanserve.media.probe import probe_audio, probe_image

    data = Path(path).read_bytes()
    info = probe_audio(data, param=kind) if kind == "audio" else probe_image(data, param=kind)
    return MediaInput(path=Path(path).resolve(), content_type=info.content_type), info


def generate(args: argparse.Namespace) -> int:
    """Make one video from local files, with a progress bar."""
    import secrets

    from tqdm import tqdm

    from wanserve.api.schemas import CreateVideoBody
    from wanserve.engines.base import GenerationRequest
    from wanserve.engines.registry import EngineRegistry
    from wanserve.jobs.intake import output_size
    from wanserve.render.pipeline import render_output

    settings = _settings(args)
    size = CreateVideoBody.model_validate(
        {"model": args.model, "media": [], "size": args.size, "seconds": args.seconds}
    ).size
    first, first_info = _media_input(args.first, "first")
    last, _ = _media_input(args.last, "last")
    audio = _media_input(args.audio, "audio")[0] if args.audio else None
    width, height = output_size(size, first_info.width, first_info.height)
    request = GenerationRequest(
        job_id="cli",
        model=args.model,
        prompt=args.prompt or "",
        negative_prompt=args.negative_prompt or "",
        first_frame=first,
        last_frame=last,
        driving_audio=audio,
        width=width,
        height=height,
        seconds=args.seconds,
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        watermark=args.watermark,
        size_label=size,
    )
    registry = EngineRegistry(settings)
    work_dir = Path(tempfile.mkdtemp(prefix="wanserve-cli-"))
    try:
        with tqdm(total=100, unit="%", desc="generating", disable=args.quiet) as bar:
            context = _LocalContext(work_dir, bar)
            output = registry.engine_for(args.model).generate(request, context)
            out_dir = work_dir / "output"
            out_dir.mkdir()
            rendered = render_output(
                output,
                out_dir=out_dir,
                audio_path=audio.path if audio else None,
                watermark=args.watermark,
                duration=float(args.seconds),
                preset=settings.encoder_preset,
                on_progress=context.report_progress,
            )
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(rendered.video_path, args.output)
    finally:
        registry.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    print(
        f"{args.output}: {rendered.width}x{rendered.height}, {rendered.duration:.2f} s, "
        f"{rendered.fps:g} fps, seed {request.seed}{', with audio' if rendered.has_audio else ''}"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wanserve", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("WANSERVE_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data-dir", type=Path, help="WANSERVE_DATA_DIR")
        sub.add_argument("--database-url", help="WANSERVE_DATABASE_URL")
        sub.add_argument("--storage-url", help="WANSERVE_STORAGE_URL")
        sub.add_argument("--engine", help="WANSERVE_ENGINE: engine of wan2.7-i2v")

    def gpus(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--gpus",
            help="WANSERVE_GPUS: one pinned worker per GPU, e.g. 0,1,2,3 (0+1,2+3: two GPUs each)",
        )

    run = commands.add_parser("serve", help="run the API with in-process workers")
    common(run)
    run.add_argument("--host", default=os.environ.get("WANSERVE_HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("WANSERVE_PORT", "8000")))
    run.add_argument("--workers", type=int, help="WANSERVE_WORKERS: worker processes (0: API only)")
    run.add_argument(
        "--api-workers", type=int, help="WANSERVE_API_WORKERS: API processes on the one port"
    )
    gpus(run)
    run.set_defaults(func=serve)

    work = commands.add_parser("worker", help="run a worker only")
    common(work)
    work.add_argument(
        "--concurrency", type=int, default=1, help="worker processes, one job at a time each"
    )
    gpus(work)
    work.add_argument(
        "--models", help="WANSERVE_WORKER_MODELS: the models to serve, e.g. a,b (default: all)"
    )
    work.set_defaults(func=worker)

    make = commands.add_parser("generate", help="make one video without a server")
    common(make)
    make.add_argument("--first", required=True, help="first frame image")
    make.add_argument("--last", required=True, help="last frame image")
    make.add_argument("--audio", help="driving audio")
    make.add_argument("--prompt")
    make.add_argument("--negative-prompt")
    make.add_argument("--seconds", type=int, default=5)
    make.add_argument("--size", default="1080P")
    make.add_argument("--seed", type=int)
    make.add_argument("--model", default="wan2.7-i2v")
    make.add_argument("--watermark", action="store_true")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.add_argument("-o", "--output", required=True)
    make.set_defaults(func=generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `wanserve` console script."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.func(args))
    except Exception as exc:
        from wanserve.errors import WanserveError

        if isinstance(exc, WanserveError):
            print(f"wanserve: {exc.message}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
