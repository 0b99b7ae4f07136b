"""The worker: claims jobs from the store and runs them through engine, encoder, storage."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from wanserve.engines.base import FrameStream, GenerationRequest, MediaInput
from wanserve.engines.registry import EngineRegistry
from wanserve.errors import (
    Conflict,
    EngineError,
    JobCancelled,
    StorageUnavailable,
    StoreUnavailable,
    UpstreamError,
)
from wanserve.jobs.backoff import Backoff, persist
from wanserve.jobs.context import JobContext, WorkerStopping
from wanserve.jobs.delivery import Dispatcher
from wanserve.jobs.fleet import Fleet, WorkerInfo, describe_device
from wanserve.jobs.maintenance import Maintenance
from wanserve.jobs.model import ErrorCode, Job, JobStatus, MediaRef
from wanserve.jobs.queue import DatabaseQueue, JobQueue
from wanserve.jobs.routing import apply_deadlines
from wanserve.jobs.stages import StageMetrics
from wanserve.jobs.store import JobStore
from wanserve.logs import log_context
from wanserve.media.clip import save_last_frame
from wanserve.render.pipeline import RenderedVideo, render_output
from wanserve.render.splice import splice
from wanserve.settings import Settings
from wanserve.storage.base import Storage
from wanserve.storage.layout import OUTPUT_FILES, output_key, output_prefix

logger = logging.getLogger(__name__)

T = TypeVar("T")
# How often a worker checks queue deadlines (overflow, time-outs), at most; its registry
# row is refreshed every `_beat_interval`, and dead after `job_lease` without one.
DEADLINE_INTERVAL = 1.0


class Worker:
    """Runs jobs one at a time: claim, generate, encode, store, complete."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        storage: Storage,
        registry: EngineRegistry,
        *,
        worker_id: str | None = None,
        queue: JobQueue | None = None,
        routes: Sequence[str] | None = None,
    ):
        self.settings = settings
        self.store = store
        self.storage = storage
        self.registry = registry
        self.queue = queue or DatabaseQueue()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # The models this worker serves: only their jobs are claimed, only their engines built.
        wanted = routes if routes is not None else settings.worker_models or registry.routes
        self.routes = [registry.route(name).name for name in wanted]
        self.stopping = threading.Event()
        self.clock = store.clock
        self.maintenance = Maintenance(settings, store, storage, self.queue, self.routes)
        self.fleet = Fleet(store.engine, clock=store.clock)
        self.dispatcher = Dispatcher.from_settings(settings, store.engine, store.clock)
        self.stages = StageMetrics(store.engine)
        self._started_at = self.clock()

    def consume(self) -> None:
        """Join the fleet, warm up, run jobs from the queue until `stopping`, then leave.

        The registry row exists from the start, so readiness shows engines loading.
        """
        self._persist(lambda: self.fleet.report(self.presence()), "joining the fleet")
        logger.info("worker %s serves %s", self.worker_id, ", ".join(self.routes))
        keeper = threading.Thread(target=self._keep_fleet, name="fleet", daemon=True)
        keeper.start()
        # Webhooks go out from every worker (a claim per row keeps each send to one).
        sender = threading.Thread(
            target=self.dispatcher.run, args=(self.stopping,), name="webhooks", daemon=True
        )
        sender.start()
        try:
            self.registry.warm_up(self.warm_models(), stopping=self.stopping)
            self.queue.consume(self)
        finally:
            self.stopping.set()
            keeper.join()
            sender.join()
            with contextlib.suppress(StoreUnavailable):
                self.fleet.leave(self.worker_id)

    def warm_models(self) -> list[str]:
        """The models loaded at start: those `WANSERVE_PRELOAD` names that this worker serves."""
        return [name for name in self.registry.preloaded_models() if name in self.routes]

    def presence(self) -> WorkerInfo:
        """This worker as the registry lists it."""
        states = self.registry.load_states()
        return WorkerInfo(
            id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            models=self.routes,
            device=describe_device(self.registry.loaded().values()),
            engines={name: states[name].state for name in self.routes},
            started_at=self._started_at,
        )

    def _keep_fleet(self) -> None:
        # A thread of its own: beats and deadlines go on while a long job runs.
        beat_every = min(5.0, self.settings.job_lease / 6)
        last_beat, reported = time.monotonic(), self.presence()
        while not self.stopping.wait(min(DEADLINE_INTERVAL, beat_every)):
            try:
                now = self.presence()
                # A beat is due, or what the row says changed (an engine got loaded).
                if time.monotonic() - last_beat >= beat_every or now != reported:
                    self.fleet.report(now)
                    self.fleet.drop_dead(self.settings.job_lease)
                    last_beat, reported = time.monotonic(), now
                self.apply_deadlines()
            except StoreUnavailable:
                logger.warning(
                    "worker %s: job store unavailable, fleet upkeep skipped", self.worker_id
                )
            except Exception:
                logger.exception("worker %s: fleet upkeep failed", self.worker_id)

    def apply_deadlines(self) -> None:
        """Move jobs waiting past their model's `max_wait` to its overflow; time out others."""
        apply_deadlines(self.store, self.registry.routes, self.queue.publish)

    def run(self) -> None:
        """Loop until `stopping` is set: maintenance, then one job or a short wait.

        A store outage (the database away, its disk full) is waited out with a growing
        pause: it never ends the loop, so the process does not crash and restart over it.
        """
        logger.info("worker %s started", self.worker_id)
        backoff = Backoff(first=self.settings.poll_interval, cap=10.0)
        while not self.stopping.is_set():
            try:
                self.maintain()
                ran = self.run_once()
            except StoreUnavailable:
                delay = backoff.next()
                logger.warning(
                    "worker %s: job store unavailable, waiting %.1f s", self.worker_id, delay
                )
                self.stopping.wait(delay)
                continue
            backoff.reset()
            if not ran:
                self.stopping.wait(self.settings.poll_interval)
        logger.info("worker %s stopped", self.worker_id)

    def maintain(self, *, force: bool = False) -> None:
        """Re-queue jobs of dead workers, delete expired and orphaned files, now and then."""
        self.maintenance.run(force=force)

    def _persist(self, call: Callable[[], T], what: str) -> T:
        """A store call retried through an outage (gives up only when stopping)."""
        return persist(call, stopping=self.stopping, what=what)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        job = self.store.claim(self.worker_id, self.routes)
        if job is None:
            return False
        self.execute(job)
        return True

    def run_job(self, job_id: str, route: str) -> bool:
        """Claim and run `route`'s next job (a broker message announcing `job_id`).

        The next job by fair share, which may be another one of `route`: that one's own
        message then starts the next. False when nothing of `route` is queued any more.
        """
        if route not in self.routes:
            logger.warning(
                "job %s: announced on %s, which this worker does not serve", job_id, route
            )
            return False
        try:
            job = self._persist(
                lambda: self.store.claim(self.worker_id, [route]), f"job {job_id}: claim"
            )
        except StoreUnavailable:
            logger.warning("job %s: left queued (worker stopping, job store unavailable)", job_id)
            return False
        if job is None:
            # A duplicate, or a job already run, cancelled or deleted: the claim is the
            # only authority, so the message is acknowledged and dropped.
            logger.info("job %s: nothing of %s queued any more; message dropped", job_id, route)
            return False
        self.execute(job)
        return True

    def execute(self, job: Job) -> None:
        """Run one claimed job to a final state (or back to the queue on shutdown)."""
        with log_context(job_id=job.id, owner_id=job.owner):
            self._execute(job)

    def _execute(self, job: Job) -> None:
        work_dir = Path(tempfile.mkdtemp(prefix=f"wanserve-{job.id}-"))
        context = JobContext(self.store, job, self.worker_id, work_dir, self.stopping)
        done = threading.Event()
        beat = threading.Thread(
            # A thread starts with an empty context: the heartbeat's lines name the job too.
            target=contextvars.copy_context().run,
            args=(context.keep_alive, min(0.5, self.settings.job_lease / 4), done),
            name=f"heartbeat-{job.id}",
            daemon=True,
        )
        beat.start()
        logger.info("job %s: started (attempt %d, engine %s)", job.id, job.attempts, job.engine)
        if job.attempts == 1:  # a retried job's wait is counted once
            self.stages.observe("queue_wait", (job.started_at or self.clock()) - job.created_at)
        try:
            rendered, metadata = self._produce(job, context)
            self._publish(job, rendered, metadata)
        except WorkerStopping:
            if self._persist(lambda: self.store.release(job.id, self.worker_id), "release"):
                self.queue.publish(job.id, job.route)
            logger.info("job %s: released back to the queue (worker stopping)", job.id)
        except JobCancelled:
            self._settle_cancelled(job)
        except StoreUnavailable:
            # Only once stopping: the outcome could not be recorded, so the lease decides.
            logger.error("job %s: left to its lease (job store unavailable)", job.id)
        except StorageUnavailable:
            self._out_of_room(job, "the file storage could not be reached")
        except UpstreamError as exc:
            detail = f" (provider code {exc.provider_code})" if exc.provider_code else ""
            self._fail(job, exc.code, exc.message + detail, exc)
        except EngineError as exc:
            self._fail(job, exc.code, exc.message, exc)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._out_of_room(job, "no space left")
            else:
                logger.exception("job %s: I/O failure", job.id)
                self._fail(job, ErrorCode.STORAGE_ERROR, "The video could not be stored.")
        except Exception:
            logger.exception("job %s: engine crashed", job.id)
            self._fail(job, ErrorCode.ENGINE_ERROR, "The engine failed while making this video.")
        finally:
            done.set()
            beat.join()
            shutil.rmtree(work_dir, ignore_errors=True)

    # 1. Inputs to local files, 2. engine, 3. encoder.
    def _produce(self, job: Job, context: JobContext) -> tuple[RenderedVideo, dict[str, Any]]:
        request = self._request_for(job, context.work_dir)
        engine = self.registry.engine_for(job.route)
        context.raise_if_cancelled()
        # An engine may hand back frames made as they are read: those count as encoding.
        with self.stages.timed("generate"):
            output = engine.generate(request, context)
        encoding_started = time.monotonic()
        audio_path = request.driving_audio.path if request.driving_audio else None
        duration = float(request.seconds)
        if request.first_clip is not None and isinstance(output, FrameStream):
            # The engine made the new part; the clip goes before it.
            continued = splice(
                output,
                request.first_clip,
                size=(request.width, request.height),
                driving_audio=request.driving_audio,
                seconds=request.seconds,
                work_dir=context.work_dir,
            )
            output, audio_path, duration = (
                continued.stream,
                continued.audio_path,
                continued.duration,
            )
        out_dir = context.work_dir / "output"
        out_dir.mkdir()

        def on_progress(fraction: float) -> None:
            context.report_progress(fraction)
            context.raise_if_cancelled()

        rendered = render_output(
            output,
            out_dir=out_dir,
            audio_path=audio_path,
            watermark=request.watermark,
            duration=duration,
            preset=self.settings.encoder_preset,
            on_progress=on_progress,
        )
        self.stages.observe("encode", time.monotonic() - encoding_started)
        return rendered, dict(output.metadata)

    def _request_for(self, job: Job, work_dir: Path) -> GenerationRequest:
        def local(ref: MediaRef | None) -> MediaInput | None:
            if ref is None:
                return None
            path = self.storage.local_path(ref.key)
            if path is None:
                path = work_dir / ref.key.rsplit("/", 1)[-1]
                self.storage.download_to(ref.key, path)
            return MediaInput(
                path=path,
                content_type=ref.content_type,
                source_url=ref.source_url,
                duration=ref.duration,
            )

        clip = local(job.media_of("first_clip"))
        first = local(job.media_of("first_frame"))
        if clip is not None:  # a continuation starts on the clip's last frame
            still = save_last_frame(clip.path, work_dir / "first_clip-last.png")
            first = MediaInput(path=still, content_type="image/png")
        assert first is not None, "intake guarantees a first frame or a first clip"
        spec = job.spec
        return GenerationRequest(
            job_id=job.id,
            model=job.model,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            first_frame=first,
            last_frame=local(job.media_of("last_frame")),
            driving_audio=local(job.media_of("driving_audio")),
            first_clip=clip,
            width=spec.width,
            height=spec.height,
            seconds=spec.seconds,
            seed=spec.seed,
            prompt_extend=spec.prompt_extend,
            watermark=spec.watermark,
            size_label=spec.size,
            options=self.registry.route(job.route).options,
        )

    # 4. Storage, 5. the final state.
    def _publish(self, job: Job, rendered: RenderedVideo, metadata: dict[str, Any]) -> None:
        paths = {
            "video": rendered.video_path,
            "thumbnail": rendered.thumbnail_path,
            "spritesheet": rendered.spritesheet_path,
        }
        with self.stages.timed("store"):
            for variant, path in paths.items():
                self.storage.put_file(
                    output_key(job.id, variant), path, OUTPUT_FILES[variant].content_type
                )
        now = self.clock()
        result = {
            "width": rendered.width,
            "height": rendered.height,
            "fps": rendered.fps,
            "frame_count": rendered.frame_count,
            "duration": rendered.duration,
            "has_audio": rendered.has_audio,
            "variants": sorted(paths),
        }
        try:
            self._persist(
                lambda: self.store.transition(
                    job.id,
                    JobStatus.COMPLETED,
                    expect=JobStatus.IN_PROGRESS,
                    worker_id=self.worker_id,
                    progress=100,
                    completed_at=now,
                    expires_at=now + self.settings.retention,
                    result=result,
                    # The engine's account, beside what routing recorded (an overflow).
                    meta={**job.metadata, **metadata},
                ),
                f"job {job.id}: completion",
            )
        except Conflict:
            # Cancelled or deleted while we stored the files: they must not outlive it.
            self.storage.delete_prefix(output_prefix(job.id))
            logger.info("job %s: finished after it was cancelled; output discarded", job.id)
            return
        logger.info(
            "job %s: completed (%dx%d, %.2fs)",
            job.id,
            rendered.width,
            rendered.height,
            rendered.duration,
        )

    def _out_of_room(self, job: Job, why: str) -> None:
        """Storage that cannot take files: back to the queue, the attempt counted, or fail."""
        if job.attempts >= self.settings.max_attempts:
            self._fail(
                job,
                ErrorCode.STORAGE_ERROR,
                f"The video could not be stored: {why} after {job.attempts} attempts.",
            )
            return
        logger.error(
            "job %s: %s, back to the queue (attempt %d of %d)",
            job.id,
            why,
            job.attempts,
            self.settings.max_attempts,
        )
        released = self._persist(
            lambda: self.store.release(job.id, self.worker_id, count_attempt=True), "release"
        )
        if released:
            self.queue.publish(job.id, job.route)
        # Room is rarely made in an instant: give the storage a moment before the next job.
        self.stopping.wait(self.settings.poll_interval * 10)

    def _settle_cancelled(self, job: Job) -> None:
        status = self._persist(lambda: self.store.status_of(job.id), f"job {job.id}: status")
        if status is JobStatus.IN_PROGRESS:
            # The engine itself reported a cancel (e.g. the provider cancelled the task).
            self._finish_failed(
                job, JobStatus.CANCELLED, ErrorCode.CANCELLED, "The job was cancelled."
            )
        logger.info("job %s: stopped (cancelled or deleted)", job.id)

    def _fail(self, job: Job, code: str, message: str, error: Exception | None = None) -> None:
        self._finish_failed(job, JobStatus.FAILED, code, message)
        # The client reads what went wrong; the log also keeps where (the library's own
        # error, with its paths, is the cause in the traceback).
        cause = error if error is not None and error.__cause__ is not None else None
        logger.warning("job %s: failed with %s: %s", job.id, code, message, exc_info=cause)

    def _finish_failed(self, job: Job, target: JobStatus, code: str, message: str) -> None:
        try:
            self._persist(
                lambda: self.store.transition(
                    job.id,
                    target,
                    expect=JobStatus.IN_PROGRESS,
                    worker_id=self.worker_id,
                    error_code=str(code),
                    error_message=message,
                    completed_at=self.clock(),
                ),
                f"job {job.id}: {target.value}",
            )
        except Conflict:
            logger.info("job %s: already settled elsewhere", job.id)
