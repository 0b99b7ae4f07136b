"""Open Wan checkpoints: which layout a folder holds, and how a request maps onto it.

Nothing here imports torch: layouts are read from the checkpoint's JSON configs, and the
request mapping is plain arithmetic, so it is cheap to test and to reason about.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cv2
import numpy as np

from wanserve.engines.base import GenerationRequest
from wanserve.errors import EngineError

# Wan's own default negative prompt (Wan2.1/2.2 `sample_neg_prompt`); the models were tuned with it.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"  # noqa: RUF001
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"  # noqa: RUF001
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"  # noqa: RUF001
)
SIZE_MULTIPLE = 16  # VAE spatial factor 8 x transformer patch 2
TEMPORAL_FACTOR = 4  # the VAE packs 4 frames per latent frame: num_frames must be 4k+1
_I2V_CLASSES = {"WanImageToVideoPipeline", "WanPipeline"}


@dataclass(frozen=True)
class Layout:
    """A checkpoint family with the generation defaults its authors publish."""

    name: str
    steps: int
    guidance: float
    guidance_2: float | None  # low-noise expert of the Wan2.2 A14B pair
    shift: float
    max_area: int  # pixel budget of the working resolution
    fps: float = 16.0
    frame_budget: int = 81
    refusal: str | None = None  # why it cannot make first+last-frame videos
    # Its image encoder conditions on two frames: no video from a first frame alone.
    needs_last_frame: bool = False

    def tuned(self, overrides: Mapping[str, Any]) -> Layout:
        """This layout with every non-None override (steps, guidance, ...) applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_720P = 1280 * 720
FLF2V = Layout(
    "wan2.1-flf2v",
    steps=50,
    guidance=5.0,
    guidance_2=None,
    shift=16.0,
    max_area=_720P,
    needs_last_frame=True,
)
A14B = Layout("wan2.2-a14b", steps=40, guidance=3.5, guidance_2=3.5, shift=5.0, max_area=_720P)
TI2V_5B = Layout(
    "wan2.2-ti2v-5b",
    steps=50,
    guidance=5.0,
    guidance_2=None,
    shift=5.0,
    max_area=1280 * 704,
    fps=24.0,
    frame_budget=121,
    refusal=(
        "Wan2.2 TI2V-5B checkpoints (expand_timesteps) ignore the last frame, so they cannot "
        "make first+last-frame videos; use Wan2.1-FLF2V-14B-720P or Wan2.2-I2V-A14B"
    ),
)
I2V = Layout(
    "wan2.1-i2v",
    steps=40,
    guidance=5.0,
    guidance_2=None,
    shift=5.0,
    max_area=_720P,
    refusal=(
        "this Wan2.1 I2V checkpoint has no last-frame conditioning (its transformer has no "
        "pos_embed_seq_len); use Wan2.1-FLF2V-14B-720P or Wan2.2-I2V-A14B"
    ),
)


def _present(value: Any) -> bool:
    """A model_index component entry names a class (not `[null, null]`)."""
    return isinstance(value, list | tuple) and len(value) == 2 and value[1] is not None


def detect_layout(model_index: Mapping[str, Any], transformer: Mapping[str, Any]) -> Layout:
    """The layout of a checkpoint from its model_index.json and transformer config."""
    cls = model_index.get("_class_name")
    if cls not in _I2V_CLASSES:
        raise EngineError(f"not a Wan image-to-video checkpoint (pipeline class {cls!r})")
    if model_index.get("expand_timesteps"):
        return TI2V_5B
    if _present(model_index.get("transformer_2")) and model_index.get("boundary_ratio"):
        return A14B
    if _present(model_index.get("image_encoder")):
        return FLF2V if transformer.get("pos_embed_seq_len") else I2V
    raise EngineError(
        "Wan checkpoint without an image encoder or a second expert: a text-to-video model "
        "cannot start from a first frame"
    )


def read_layout(model: str) -> Layout:
    """The layout of a local folder or hub id, from its JSON configs only (no weights)."""
    from diffusers import DiffusionPipeline, WanTransformer3DModel

    try:
        model_index = DiffusionPipeline.load_config(model)
        transformer = WanTransformer3DModel.load_config(model, subfolder="transformer")
    except (OSError, ValueError) as exc:
        raise EngineError("cannot read the Wan checkpoint of this model") from exc
    return detect_layout(model_index, transformer)


def working_size(aspect: float, area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(width, height), multiples of `multiple`, with `aspect` and at most `area` pixels."""
    width = max(multiple, int(math.sqrt(area * aspect)) // multiple * multiple)
    height = max(multiple, int(math.sqrt(area / aspect)) // multiple * multiple)
    return width, height


def valid_frame_count(frames: int) -> int:
    """The largest 4k+1 not above `frames` (at least 1)."""
    return max(1, (frames - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1)


@dataclass(frozen=True)
class Plan:
    """What one request asks of the pipeline, and how its frames become the output."""

    width: int  # working resolution
    height: int
    num_frames: int  # generated, 4k+1
    output_width: int
    output_height: int
    output_frames: int
    fps: float
    steps: int
    guidance: float
    guidance_2: float | None
    shift: float
    negative_prompt: str
    seed: int
    # Frames generated by each consecutive clip of a segmented long video; empty: one clip.
    segments: tuple[int, ...] = ()

    @property
    def retimed(self) -> bool:
        """True when output frames are interpolated between generated ones."""
        return not self.segments and self.output_frames != self.num_frames

    @property
    def clips(self) -> tuple[int, ...]:
        """Frames generated by each pipeline call, in order."""
        return self.segments or (self.num_frames,)

    def metadata(self) -> dict[str, Any]:
        """The values actually used, for FrameStream.metadata."""
        return {
            "working_size": f"{self.width}x{self.height}",
            "num_frames": self.num_frames,
            "steps": self.steps,
            "guidance": self.guidance,
            "guidance_2": self.guidance_2,
            "shift": self.shift,
            "seed": self.seed,
            "retimed": self.retimed,
            "long_video": "segments" if self.segments else "retime",
            "segments": list(self.segments) or None,
        }


def plan_request(
    request: GenerationRequest,
    layout: Layout,
    *,
    negative_prompt: str,
    long_video: str = "retime",
) -> Plan:
    """Map a request onto `layout`: working size, frame counts, sampler values.

    Beyond the frame budget, `long_video` chooses between one clip in-betweened to the
    length ("retime": slow motion) and consecutive clips at native speed ("segments").
    """
    area = min(layout.max_area, request.width * request.height)
    width, height = working_size(request.width / request.height, area)
    # Both ends count: a 5 s video at 16 fps is Wan's native 81 frames.
    output_frames = round(request.seconds * layout.fps) + 1
    wanted = output_frames + (1 - output_frames) % TEMPORAL_FACTOR  # next 4k+1
    # Over the budget the generated frames still span first to last frame: the output is
    # then in-betweened from them (see `output_frames`).
    num_frames = min(wanted, valid_frame_count(layout.frame_budget))
    segments: tuple[int, ...] = ()
    if long_video == "segments" and wanted > num_frames:
        segments = segment_frames(output_frames, layout.frame_budget)
        num_frames = sum(segments)
    return Plan(
        width=width,
        height=height,
        num_frames=num_frames,
        output_width=request.width,
        output_height=request.height,
        output_frames=output_frames,
        fps=layout.fps,
        steps=layout.steps,
        guidance=layout.guidance,
        guidance_2=layout.guidance_2,
        shift=layout.shift,
        negative_prompt=request.negative_prompt or negative_prompt,
        seed=request.seed,
        segments=segments,
    )


def segment_spans(output_frames: int, frame_budget: int) -> list[int]:
    """How many new output frames each clip adds; clip k+1 starts on clip k's last frame.

    Spans are whole latent frames (multiples of 4) where the length allows, so every clip
    generates exactly its span + 1 frames and nothing is retimed.
    """
    longest = valid_frame_count(frame_budget) - 1
    if longest < TEMPORAL_FACTOR:
        raise EngineError(f"a frame budget of {frame_budget} is too small for segments")
    total = output_frames - 1
    count = -(-total // longest)
    units, remainder = divmod(total, TEMPORAL_FACTOR)
    base, extra = divmod(units, count)
    spans = [(base + (1 if k < extra else 0)) * TEMPORAL_FACTOR for k in range(count)]
    spans[-1] += remainder
    return spans


def segment_frames(output_frames: int, frame_budget: int) -> tuple[int, ...]:
    """Frames each clip generates (4k+1, within the budget) for `segment_spans`."""
    budget = valid_frame_count(frame_budget)
    return tuple(
        min(budget, span + 1 + (-span) % TEMPORAL_FACTOR)
        for span in segment_spans(output_frames, frame_budget)
    )


def pipeline_arguments(plan: Plan, *, two_experts: bool) -> dict[str, Any]:
    """Keyword arguments of WanImageToVideoPipeline.__call__ for `plan` (no images/prompt)."""
    arguments: dict[str, Any] = {
        "negative_prompt": plan.negative_prompt,
        "height": plan.height,
        "width": plan.width,
        "num_frames": plan.num_frames,
        "num_inference_steps": plan.steps,
        "guidance_scale": plan.guidance,
        "output_type": "np",
    }
    if two_experts:
        arguments["guidance_scale_2"] = plan.guidance_2
    return arguments


class Interpolator(Protocol):
    """In-between frames of two frames (see wanserve.engines.flow.FlowInterpolator)."""

    def frame_at(self, t: float) -> np.ndarray:
        """The frame at time t in [0, 1]."""


InterpolatorFactory = Callable[[np.ndarray, np.ndarray], Interpolator]


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    shrink = width * height < frame.shape[0] * frame.shape[1]
    method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return cv2.resize(frame, (width, height), interpolation=method)


def output_frames(
    frames: Sequence[np.ndarray], plan: Plan, interpolate: InterpolatorFactory
) -> Iterator[np.ndarray]:
    """The plan's output frames at output size, in-betweened when retimed."""
    last = len(frames) - 1
    pair: tuple[int, Interpolator] | None = None
    for j in range(plan.output_frames):
        position = j * last / max(1, plan.output_frames - 1)
        i = min(int(position), last)
        t = position - i
        if t < 1e-6 or i == last:
            frame = frames[i]
        else:
            if pair is None or pair[0] != i:
                pair = (i, interpolate(frames[i], frames[i + 1]))
            frame = pair[1].frame_at(t)
        yield _resize(frame, plan.output_width, plan.output_height)


SEAM_FRAMES = 8  # frames over which a clip's colour offset at the join fades out


def _pick(clip: np.ndarray, count: int) -> np.ndarray:
    """`count` frames of `clip` spread evenly, first and last kept (nearest frames)."""
    if len(clip) == count:
        return clip
    indices = np.round(np.linspace(0, len(clip) - 1, count)).astype(int)
    return clip[indices]


def _mean_colour(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32).mean(axis=(0, 1))


def join_clips(clips: Sequence[np.ndarray], spans: Sequence[int]) -> list[np.ndarray]:
    """One frame sequence from consecutive clips, each starting on the previous one's end.

    A clip's first frame is the VAE's re-rendering of the frame it started from, so it is
    dropped; the small colour shift that the round trip leaves is measured there and
    faded out over the clip's first frames, so the join shows no step.
    """
    frames: list[np.ndarray] = []
    for clip, span in zip(clips, spans, strict=True):
        picked = _pick(clip, span + 1)
        if not frames:
            frames.extend(picked)
            continue
        offset = _mean_colour(frames[-1]) - _mean_colour(picked[0])
        for position, frame in enumerate(picked[1:], start=1):
            weight = max(0.0, 1.0 - position / SEAM_FRAMES)
            if weight == 0.0:
                frames.append(frame)
                continue
            shifted = frame.astype(np.float32) + weight * offset
            frames.append(np.clip(shifted + 0.5, 0, 255).astype(np.uint8))
    return frames
