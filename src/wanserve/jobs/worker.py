"""The worker: claims jobs from the store and runs them through engine, encoder, storage."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wanserve.engines.base import GenerationRequest, MediaInput
from wanserve.engines.registry import EngineRegistry
from wanserve.errors import Conflict, EngineError, JobCancelled, UpstreamError
from wanserve.jobs.model import ErrorCode, Job, JobStatus, MediaRef
from wanserve.jobs.queue import DatabaseQueue, JobQueue
from wanserve.jobs.store import JobStore
from wanserve.render.pipeline import RenderedVideo, render_output
from wanserve.settings import Settings
from wanserve.storage.base import Storage
from wanserve.storage.layout import OUTPUT_FILES, output_key, output_prefix

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 60.0


class WorkerStopping(JobCancelled):
    """The worker process is shutting down; its job goes back to the queue."""


class JobLost(JobCancelled):
    """The job was re-queued after a missed lease and may be running elsewhere now.

    Distinct from a plain `JobCancelled` (the client cancelled or deleted it) so an
    upstream engine does not cancel a provider task that another worker may be resuming.
    """


class JobContext:
    """The `EngineContext` for one attempt at one job."""

    def __init__(self, store: JobStore, job: Job, worker_id: str, work_dir: Path, stopping: Any):
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.work_dir = work_dir
        self._stopping = stopping
        self._lost = threading.Event()
        self._cancelled = threading.Event()
        self._progress = job.progress
        self._state: dict[str, Any] = dict(job.engine_state)

    def report_progress(self, fraction: float) -> None:
        """Store progress as a percentage, capped at 99 until the job is completed."""
        percent = min(99, max(0, int(fraction * 100)))
        if percent > self._progress:
            self._progress = percent
            self.store.set_progress(self.job.id, percent)

    def raise_if_cancelled(self) -> None:
        """Raise when the job was cancelled or deleted, or the worker is stopping."""
        if self._stopping.is_set():
            raise WorkerStopping("worker is stopping")
        if self._cancelled.is_set():
            raise JobCancelled("job was cancelled or deleted")
        if self._lost.is_set():
            raise JobLost("job was taken over after a missed lease")

    @property
    def state(self) -> Mapping[str, Any]:
        """Engine state saved by an earlier attempt."""
        return self._state

    def save_state(self, state: Mapping[str, Any]) -> None:
        """Persist engine state now (before the engine goes on)."""
        self._state = dict(state)
        self.store.save_engine_state(self.job.id, self._state)

    def keep_alive(self, interval: float, done: threading.Event) -> None:
        """Heart-beat until `done`; notice when the job stops being ours."""
        while not done.wait(interval):
            try:
                if not self.store.heartbeat(self.job.id, self.worker_id):
                    status = self.store.status_of(self.job.id)
                    gone = status is None or status is JobStatus.CANCELLED
                    (self._cancelled if gone else self._lost).set()
                    return
            except Exception:
                logger.exception("job %s: heartbeat failed", self.job.id)


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
    ):
        self.settings = settings
        self.store = store
        self.storage = storage
        self.registry = registry
        self.queue = queue or DatabaseQueue()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()
        self.clock = store.clock
        self._last_maintenance = 0.0

    def run(self) -> None:
        """Loop until `stopping` is set: maintenance, then one job or a short sleep."""
        logger.info("worker %s started", self.worker_id)
        while not self.stopping.is_set():
            self.maintain()
            if not self.run_once():
                self.stopping.wait(self.settings.poll_interval)
        logger.info("worker %s stopped", self.worker_id)

    def maintain(self, *, force: bool = False) -> None:
        """Re-queue jobs of dead workers and delete expired files, now and then."""
        now = self.clock()
        if not force and now - self._last_maintenance < min(
            SWEEP_INTERVAL, self.settings.job_lease / 2
        ):
            return
        self._last_maintenance = now
        requeued, failed = self.store.requeue_stale(
            lease=self.settings.job_lease, max_attempts=self.settings.max_attempts
        )
        for job_id in requeued:
            logger.warning("job %s: worker lost, re-queued", job_id)
            self.queue.publish(job_id)
        for job_id in failed:
            logger.error("job %s: worker lost too often, failed", job_id)
        self.queue.sweep(self.store)
        for job in self.store.expired(now):
            self.storage.delete_prefix(output_prefix(job.id))
            self.store.mark_swept(job.id)
            logger.info("job %s: files expired and deleted", job.id)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        job = self.store.claim(self.worker_id)
        if job is None:
            return False
        self.execute(job)
        return True

    def run_job(self, job_id: str) -> bool:
        """Claim and run this job (a broker message); False when it is not queued any more."""
        job = self.store.claim_job(job_id, self.worker_id)
        if job is None:
            # A duplicate, or a job already run, cancelled or deleted: the claim is the
            # only authority, so the message is acknowledged and dropped.
            logger.info("job %s: not queued any more; message dropped", job_id)
            return False
        self.execute(job)
        return True

    def execute(self, job: Job) -> None:
        """Run one claimed job to a final state (or back to the queue on shutdown)."""
        work_dir = Path(tempfile.mkdtemp(prefix=f"wanserve-{job.id}-"))
        context = JobContext(self.store, job, self.worker_id, work_dir, self.stopping)
        done = threading.Event()
        beat = threading.Thread(
            target=context.keep_alive,
            args=(min(0.5, self.settings.job_lease / 4), done),
            name=f"heartbeat-{job.id}",
            daemon=True,
        )
        beat.start()
        logger.info("job %s: started (attempt %d, engine %s)", job.id, job.attempts, job.engine)
        try:
            rendered, metadata = self._produce(job, context)
            self._publish(job, rendered, metadata)
        except WorkerStopping:
            if self.store.release(job.id, self.worker_id):
                self.queue.publish(job.id)
            logger.info("job %s: released back to the queue (worker stopping)", job.id)
        except JobCancelled:
            self._settle_cancelled(job)
        except UpstreamError as exc:
            detail = f" (provider code {exc.provider_code})" if exc.provider_code else ""
            self._fail(job, exc.code, exc.message + detail)
        except EngineError as exc:
            self._fail(job, exc.code, exc.message)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                logger.error("job %s: disk full, job goes back to the queue", job.id)
                if self.store.release(job.id, self.worker_id):
                    self.queue.publish(job.id)
                self.stopping.wait(self.settings.poll_interval * 10)
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
        engine = self.registry.engine_for(job.model)
        context.raise_if_cancelled()
        output = engine.generate(request, context)
        out_dir = context.work_dir / "output"
        out_dir.mkdir()

        def on_progress(fraction: float) -> None:
            context.report_progress(fraction)
            context.raise_if_cancelled()

        rendered = render_output(
            output,
            out_dir=out_dir,
            audio_path=request.driving_audio.path if request.driving_audio else None,
            watermark=request.watermark,
            duration=float(request.seconds),
            preset=self.settings.encoder_preset,
            on_progress=on_progress,
        )
        return rendered, dict(output.metadata)

    def _request_for(self, job: Job, work_dir: Path) -> GenerationRequest:
        def local(ref: MediaRef | None) -> MediaInput | None:
            if ref is None:
                return None
            path = self.storage.local_path(ref.key)
            if path is None:
                path = work_dir / ref.key.rsplit("/", 1)[-1]
                self.storage.download_to(ref.key, path)
            return MediaInput(path=path, content_type=ref.content_type, source_url=ref.source_url)

        first, last = local(job.media_of("first_frame")), local(job.media_of("last_frame"))
        assert first is not None and last is not None, "intake guarantees both frames"
        spec = job.spec
        return GenerationRequest(
            job_id=job.id,
            model=job.model,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            first_frame=first,
            last_frame=last,
            driving_audio=local(job.media_of("driving_audio")),
            width=spec.width,
            height=spec.height,
            seconds=spec.seconds,
            seed=spec.seed,
            prompt_extend=spec.prompt_extend,
            watermark=spec.watermark,
            size_label=spec.size,
            options=self.registry.route(job.model).options,
        )

    # 4. Storage, 5. the final state.
    def _publish(self, job: Job, rendered: RenderedVideo, metadata: dict[str, Any]) -> None:
        paths = {
            "video": rendered.video_path,
            "thumbnail": rendered.thumbnail_path,
            "spritesheet": rendered.spritesheet_path,
        }
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
            self.store.transition(
                job.id,
                JobStatus.COMPLETED,
                expect=JobStatus.IN_PROGRESS,
                worker_id=self.worker_id,
                progress=100,
                completed_at=now,
                expires_at=now + self.settings.retention,
                result=result,
                meta=metadata,
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

    def _settle_cancelled(self, job: Job) -> None:
        status = self.store.status_of(job.id)
        if status is JobStatus.IN_PROGRESS:
            # The engine itself reported a cancel (e.g. the provider cancelled the task).
            self._finish_failed(
                job, JobStatus.CANCELLED, ErrorCode.CANCELLED, "The job was cancelled."
            )
        logger.info("job %s: stopped (cancelled or deleted)", job.id)

    def _fail(self, job: Job, code: str, message: str) -> None:
        self._finish_failed(job, JobStatus.FAILED, code, message)
        logger.warning("job %s: failed with %s: %s", job.id, code, message)

    def _finish_failed(self, job: Job, target: JobStatus, code: str, message: str) -> None:
        try:
            self.store.transition(
                job.id,
                target,
                expect=JobStatus.IN_PROGRESS,
                worker_id=self.worker_id,
                error_code=str(code),
                error_message=message,
                completed_at=self.clock(),
            )
        except Conflict:
            logger.info("job %s: already settled elsewhere", job.id)
