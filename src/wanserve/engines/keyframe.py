"""The embedded CPU engine: motion from the first frame to the last, paced by the audio.

When the two frames show the same scene, objects that moved over it are cut out and
carried along their paths as layers over a background plate (`find_layers`,
`LayeredMotion`), and the rest comes from optical flow (`FlowInterpolator`); when they
do not, a deliberate transition (slow push-in with an eased dissolve) stands in for
motion that cannot be inferred. Frames are made one at a time as the encoder asks for
them, so memory does not grow with the video's length.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import cv2
import numpy as np

from wanserve.engines.base import EngineContext, FrameStream, GenerationRequest
from wanserve.engines.composite import LayeredMotion
from wanserve.engines.continuation import glide_from_clip
from wanserve.engines.flow import FlowInterpolator
from wanserve.engines.frames import load_frame
from wanserve.engines.layers import find_layers
from wanserve.engines.pacing import loudness_envelope, paced_times
from wanserve.settings import Settings

logger = logging.getLogger(__name__)

FPS = 24
MIN_WORK_WIDTH = 64  # below this, motion estimation has too little to go on
PUSH_IN = 0.08  # the fallback's zoom: 8% over the whole video, barely noticed but alive
DISSOLVE = (0.15, 0.85)  # share of the video over which the fallback cross-dissolves


class Motion(Protocol):
    """Anything that renders the video's frame at time t in [0, 1]."""

    def frame_at(self, t: float) -> np.ndarray:
        """The frame at time t."""


class PushDissolve:
    """Fallback for unrelated frames: both slowly zoomed, crossed with an eased dissolve."""

    def __init__(self, first: np.ndarray, last: np.ndarray, *, seed: int):
        self.first, self.last = first, last
        height, width = first.shape[:2]
        # The seed picks where the camera pushes in: same seed, same video.
        rng = random.Random(seed)
        self._focus = (width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6))

    def frame_at(self, t: float) -> np.ndarray:
        """The frame at time t: first pushing in, last settling from a zoom to rest."""
        start, end = DISSOLVE
        u = min(1.0, max(0.0, (t - start) / (end - start)))
        mix = u * u * (3.0 - 2.0 * u)
        if mix <= 0.0:
            return self._zoom(self.first, 1.0 + PUSH_IN * t)
        if mix >= 1.0:
            return self._zoom(self.last, 1.0 + PUSH_IN * (1.0 - t))
        first = self._zoom(self.first, 1.0 + PUSH_IN * t)
        last = self._zoom(self.last, 1.0 + PUSH_IN * (1.0 - t))
        return np.asarray(cv2.addWeighted(first, 1.0 - mix, last, mix, 0.0))

    def _zoom(self, image: np.ndarray, scale: float) -> np.ndarray:
        if scale == 1.0:
            return image.copy()
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D(self._focus, 0.0, scale)
        return np.asarray(
            cv2.warpAffine(
                image,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
        )


class KeyframeEngine:
    """Turns a first and a last frame (and optional driving audio) into motion, on the CPU."""

    name = "keyframe"

    def __init__(self, *, work_width: int = 640):
        self.work_width = work_width

    def generate(self, request: GenerationRequest, context: EngineContext) -> FrameStream:
        """Set up the motion for `request` and return its frames as a lazy stream."""
        if request.last_frame is None:  # a clip continued with nowhere set to go
            return glide_from_clip(request, context, fps=FPS, work_width=self.work_width)
        size = (request.width, request.height)
        frame_count = request.seconds * FPS
        # 1. Inputs at the output size.
        context.raise_if_cancelled()
        first = np.asarray(load_frame(request.first_frame.path, size, param="first_frame"))
        last = np.asarray(load_frame(request.last_frame.path, size, param="last_frame"))
        context.report_progress(0.01)
        # 2. Motion: objects over their scene, flow, or (unrelated frames) the transition.
        context.raise_if_cancelled()
        motion, metadata = choose_motion(first, last, work_width=self.work_width, seed=request.seed)
        context.report_progress(0.03)
        # 3. Timing, paced by the audio when there is some.
        loudness = None
        if request.driving_audio is not None:
            loudness = loudness_envelope(request.driving_audio.path, FPS, frame_count)
        times = paced_times(frame_count, loudness)
        metadata["audio_paced"] = loudness is not None
        metadata["work_width"] = self.work_width
        logger.info("job %s: keyframe motion %s", request.job_id, metadata)
        return FrameStream(
            fps=FPS,
            frame_count=frame_count,
            frames=_frames(motion, times, context),
            metadata=metadata,
            progress_start=0.03,
        )

    def close(self) -> None:
        """Nothing to release: the engine keeps no models or sessions."""


def create_engine(settings: Settings, options: Mapping[str, Any]) -> KeyframeEngine:
    """The keyframe engine; option `work_width` sets the motion-estimation width (640)."""
    work_width = int(options.get("work_width", 640))
    if work_width < MIN_WORK_WIDTH:
        raise ValueError(f"keyframe option work_width must be at least {MIN_WORK_WIDTH}")
    return KeyframeEngine(work_width=work_width)


def choose_motion(
    first: np.ndarray, last: np.ndarray, *, work_width: int, seed: int
) -> tuple[Motion, dict[str, Any]]:
    """The motion between two frames and what the job's metadata says about it.

    Moving objects that can be matched become layers over a background plate; when
    none can (or the plates do not show one scene), flow between the frames as they
    are; when even those do not correspond, the push-and-dissolve transition.
    """
    scene = find_layers(first, last, work_width=work_width)
    if scene is not None:
        plates = FlowInterpolator(scene.plate0, scene.plate1, work_width=work_width)
        if plates.corresponds:
            objects = [layer.summary() for layer in scene.layers]
            metadata = _flow_metadata(plates, "layers") | {"objects": objects}
            return LayeredMotion(first, last, scene, plates), metadata
    flow = FlowInterpolator(first, last, work_width=work_width)
    if flow.corresponds:
        return flow, _flow_metadata(flow, "flow") | {"objects": []}
    return PushDissolve(first, last, seed=seed), _flow_metadata(flow, "fallback")


def _flow_metadata(flow: FlowInterpolator, interpolation: str) -> dict[str, Any]:
    return {
        "interpolation": interpolation,
        "flow_consistency": round(flow.consistency, 4),
        "flow_residual": round(flow.residual, 4),
        "global_motion": "none" if flow.homography is None else "homography",
    }


def _frames(motion: Motion, times: np.ndarray, context: EngineContext) -> Iterator[np.ndarray]:
    """Each frame is made on a helper thread while the caller encodes the one before.

    OpenCV drops the GIL, so making and encoding overlap; one frame in flight keeps memory
    flat. Closing the generator (cancel, error) waits for that frame and ends the thread.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyframe") as pool:
        pending: Future[np.ndarray] | None = None
        for t in times:
            context.raise_if_cancelled()
            future = pool.submit(motion.frame_at, float(t))
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()
