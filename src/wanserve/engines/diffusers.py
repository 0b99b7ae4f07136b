"""The `diffusers` engine: open Wan first+last-frame checkpoints on a local GPU (or CPU).

The pipeline is loaded once per engine (one per worker process; `wanserve worker --gpus`
runs one pinned worker per GPU) and kept warm. torch and diffusers are imported inside the
functions below only, so the base install can import this module without them.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from wanserve.engines.base import EngineContext, FrameStream, GenerationRequest, MediaInput
from wanserve.engines.frames import load_frame
from wanserve.engines.prompt_extend import PromptExtender, prompt_extender
from wanserve.engines.wan_layouts import (
    WAN_NEGATIVE_PROMPT,
    InterpolatorFactory,
    Layout,
    Plan,
    join_clips,
    output_frames,
    pipeline_arguments,
    plan_request,
    read_layout,
    segment_spans,
)
from wanserve.engines.wan_pipeline import (
    LoadedPipeline,
    MemoryMeter,
    device_and_dtype,
    load_pipeline,
)
from wanserve.errors import EngineError
from wanserve.settings import Settings

logger = logging.getLogger(__name__)

AUDIO_NOTE = (
    "the installed diffusers has no speech-to-video Wan pipeline: the video is not driven by "
    "the audio, which is muxed into it unchanged"
)
# Progress in units of one denoising step: prompt/image/VAE encoding before the loop, the
# VAE decode after it (Wan's 3D VAE decode costs about two steps), then the frame output.
_ENCODE_UNITS, _DECODE_UNITS, _OUTPUT_UNITS, _RETIME_UNITS = 1.0, 2.0, 1.0, 2.0


class LoraAdapter(BaseModel):
    """One LoRA: a local file or folder (or hub id), its scale, the experts it applies to."""

    path: str
    scale: float = 1.0
    # Wan2.2 A14B: "high" is the high-noise expert (transformer), "low" the low-noise one.
    expert: Literal["both", "high", "low"] = "both"
    weight_name: str | None = None  # the .safetensors file inside a folder


class DiffusersSettings(BaseSettings):
    """WANSERVE_DIFFUSERS_* settings; engine options of the same names take precedence."""

    model_config = SettingsConfigDict(env_prefix="WANSERVE_DIFFUSERS_", extra="ignore")

    model: str | None = None  # local folder or hub id of a Diffusers-format Wan checkpoint
    device: Literal["cuda", "cpu"] | None = None  # default: cuda when available
    dtype: Literal["bf16", "fp16", "fp32"] | None = None  # default: bf16 on cuda, fp32 on cpu
    cpu_offload: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention_backend: str | None = None  # auto, flash, _flash_3, sage, _native_cudnn, ...
    compile: bool = False  # torch.compile the transformer blocks
    loras: list[LoraAdapter] = []
    quantization: Literal["fp8", "int8", "int8_dynamic"] | None = None  # transformers only
    scheduler: Literal["euler"] | None = None  # None: the checkpoint's own (UniPC)
    cache: Literal["first_block", "mag", "taylorseer"] | None = None
    cache_threshold: float | None = Field(default=None, gt=0)
    cache_interval: int = Field(default=2, ge=1)  # taylorseer: full forward every N steps
    cache_mag_ratios: list[float] | None = None
    group_offload: Literal["block", "leaf"] | None = None
    group_offload_blocks: int = Field(default=1, ge=1)
    context_parallel: int = Field(default=1, ge=1)  # Ulysses degree: ranks per video
    long_video: Literal["retime", "segments"] = "retime"
    steps: int | None = Field(default=None, ge=1)  # None: the layout's default
    guidance: float | None = None
    guidance_2: float | None = None
    shift: float | None = None
    max_area: int | None = Field(default=None, ge=256)
    frame_budget: int | None = Field(default=None, ge=1)
    fps: float | None = Field(default=None, gt=0)
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    interpolation_width: int = Field(default=640, ge=16)
    s2v_model: str | None = None  # speech-to-video checkpoint, once diffusers ships one
    s2v_pipeline: str = "WanSpeechToVideoPipeline"

    def layout_overrides(self) -> dict[str, Any]:
        """The settings that replace a layout's published defaults when set."""
        names = ("steps", "guidance", "guidance_2", "shift", "max_area", "frame_budget", "fps")
        return {name: getattr(self, name) for name in names}


def _flow_interpolator(width: int) -> InterpolatorFactory:
    from wanserve.engines.flow import FlowInterpolator

    return lambda first, last: FlowInterpolator(first, last, work_width=width)


def _speech_pipeline_class(settings: DiffusersSettings) -> Any:
    import diffusers

    cls = getattr(diffusers, settings.s2v_pipeline, None)
    if cls is None:
        raise EngineError(
            f"WANSERVE_DIFFUSERS_S2V_MODEL is set, but diffusers {diffusers.__version__} has no "
            f"{settings.s2v_pipeline}; unset it (audio is then muxed, not driving the video) "
            "or install a diffusers release that has it"
        )
    return cls


def _conditioning_image(media: MediaInput, plan: Plan) -> Image.Image:
    """The input frame cropped to the output aspect and sized to the working resolution."""
    return load_frame(
        media.path,
        (plan.width, plan.height),
        param="frame",
        aspect=(plan.output_width, plan.output_height),
    )


class _Progress:
    """Honest progress: denoising steps weighted against encode, decode and output."""

    def __init__(self, plan: Plan):
        tail = _OUTPUT_UNITS + (_RETIME_UNITS if plan.retimed else 0.0)
        self._clip_units = plan.steps + _DECODE_UNITS
        self._clips = len(plan.clips)
        self._total = _ENCODE_UNITS + self._clips * self._clip_units + tail

    def after_step(self, clip: int, step: int) -> float:
        """Share of the job done after denoising step `step` (1-based) of clip `clip`."""
        return (_ENCODE_UNITS + clip * self._clip_units + step) / self._total

    def before_output(self) -> float:
        """Share done once decoded frames start streaming."""
        return (_ENCODE_UNITS + self._clips * self._clip_units) / self._total


class DiffusersEngine:
    """Wan2.1 FLF2V / Wan2.2 I2V-A14B through diffusers; one job at a time per pipeline."""

    name = "diffusers"

    def __init__(
        self,
        settings: DiffusersSettings,
        *,
        extender: PromptExtender | None = None,
        interpolator: InterpolatorFactory | None = None,
    ):
        if not settings.model:
            raise EngineError("the diffusers engine needs a model: set WANSERVE_DIFFUSERS_MODEL")
        layout = read_layout(settings.model)
        if layout.refusal:
            logger.error("diffusers model %s refused: %s", settings.model, layout.refusal)
            raise EngineError(f"the configured checkpoint is refused: {layout.refusal}")
        _check_combinations(settings, layout)
        from diffusers import WanImageToVideoPipeline

        self.settings = settings
        self.layout = layout.tuned(settings.layout_overrides())
        speech_cls = _speech_pipeline_class(settings) if settings.s2v_model else None
        self.device, self.dtype = device_and_dtype(settings)

        def load() -> LoadedPipeline:
            assert settings.model is not None
            return load_pipeline(WanImageToVideoPipeline, settings.model, settings, self.layout)

        self._parallel: Any = None
        if settings.context_parallel > 1:
            from wanserve.engines.wan_parallel import ParallelRunner

            self._parallel = ParallelRunner(settings, settings.context_parallel, load)
            self.loaded = self._parallel.loaded
        else:
            self.loaded = load()
        self.pipeline: Any = self.loaded.pipe
        self.speech: LoadedPipeline | None = (
            load_pipeline(speech_cls, settings.s2v_model, settings, self.layout)
            if speech_cls is not None and settings.s2v_model
            else None
        )
        self.speech_pipeline: Any = self.speech.pipe if self.speech else None
        self._memory = MemoryMeter(self.device)
        self._extender = extender
        self._interpolator = interpolator or _flow_interpolator(settings.interpolation_width)
        self._lock = threading.Lock()  # diffusers pipelines keep per-call state on self
        logger.info(
            "diffusers engine ready: %s (%s) on %s, %s, attention %s",
            settings.model,
            self.layout.name,
            self.device,
            self.dtype,
            self.loaded.attention_backend,
        )

    def generate(self, request: GenerationRequest, context: EngineContext) -> FrameStream:
        """Generate the request's frames, then stream them resized (and retimed if needed)."""
        context.raise_if_cancelled()
        if request.last_frame is None and self.layout.needs_last_frame:
            raise EngineError(
                f"the {self.layout.name} checkpoint needs a last frame: continue this clip "
                "towards a last_frame, or serve an image-to-video checkpoint (Wan2.2-I2V-A14B)"
            )
        prompt = request.prompt
        if request.prompt_extend and self._extender is not None:
            prompt = self._extender.extend(request.prompt, job_id=request.job_id)
        plan = plan_request(
            request,
            self.layout,
            negative_prompt=self.settings.negative_prompt,
            long_video=self.settings.long_video,
        )
        audio_driven = request.driving_audio is not None and self.speech is not None
        loaded = self.speech if audio_driven and self.speech is not None else self.loaded
        with self._lock:
            self._memory.start()
            if loaded.reuse is not None:
                loaded.reuse.reset()
            frames = self._clips(request, plan, prompt, context, loaded, audio_driven)
            metadata = self._metadata(request, plan, prompt, audio_driven, loaded)
        return FrameStream(
            fps=plan.fps,
            frame_count=plan.output_frames,
            frames=output_frames(frames, plan, self._interpolator),
            metadata=metadata,
            progress_start=_Progress(plan).before_output(),
        )

    def _clips(
        self,
        request: GenerationRequest,
        plan: Plan,
        prompt: str,
        context: EngineContext,
        loaded: LoadedPipeline,
        audio_driven: bool,
    ) -> list[np.ndarray]:
        """Every clip of the plan, each starting where the previous one ended, joined."""
        progress = _Progress(plan)
        start = _conditioning_image(request.first_frame, plan)
        # A continuation without a last frame is plain image-to-video from the clip's end.
        end = _conditioning_image(request.last_frame, plan) if request.last_frame else None
        clips = []
        for index, num_frames in enumerate(plan.clips):
            final = index == len(plan.clips) - 1
            arguments = pipeline_arguments(plan, two_experts=self.layout.guidance_2 is not None)
            # Earlier segments continue from one frame; only the last must reach the end.
            arguments |= {
                "image": start,
                "last_image": end if final else None,
                "prompt": prompt,
                "num_frames": num_frames,
            }
            if audio_driven and request.driving_audio is not None:
                arguments["audio"] = str(request.driving_audio.path)
            video = self._denoise(request, plan, arguments, context, loaded, progress, index)
            clip = np.clip(video * 255.0 + 0.5, 0, 255).astype(np.uint8)
            clips.append(clip)
            start = Image.fromarray(clip[-1])
        if not plan.segments:
            return list(clips[0])
        return join_clips(clips, segment_spans(plan.output_frames, self.layout.frame_budget))

    def _denoise(
        self,
        request: GenerationRequest,
        plan: Plan,
        arguments: dict[str, Any],
        context: EngineContext,
        loaded: LoadedPipeline,
        progress: _Progress,
        clip: int,
    ) -> np.ndarray:
        """Run one pipeline call; cancel, OOM and hook clean-up handled here."""
        import torch

        from wanserve.engines.wan_parallel import run_call

        def on_step(step: int) -> None:
            if loaded.reuse is not None:
                loaded.reuse.step_done()
            # Raising (not pipe._interrupt) is what skips the costly VAE decode.
            context.raise_if_cancelled()
            context.report_progress(progress.after_step(clip, step + 1))

        seed = plan.seed + clip
        try:
            if self._parallel is not None and loaded is self.loaded:
                return self._parallel.call(arguments, seed, on_step)
            return run_call(loaded.pipe, arguments, seed, on_step)
        except torch.OutOfMemoryError as exc:
            raise self._out_of_memory(request, plan) from exc

    def _out_of_memory(self, request: GenerationRequest, plan: Plan) -> EngineError:
        """Free what the failed run held and explain the failure."""
        import torch

        logger.exception("job %s: out of GPU memory", request.job_id)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return EngineError(
            f"the GPU ran out of memory generating {max(plan.clips)} frames at "
            f"{plan.width}x{plan.height}; try a smaller size or shorter video, or enable "
            "WANSERVE_DIFFUSERS_GROUP_OFFLOAD / CPU_OFFLOAD / VAE_TILING",
            code="engine_error",
        )

    def _metadata(
        self,
        request: GenerationRequest,
        plan: Plan,
        prompt: str,
        audio_driven: bool,
        loaded: LoadedPipeline,
    ) -> dict[str, Any]:
        settings = self.settings
        metadata = plan.metadata() | {
            "layout": self.layout.name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "actual_prompt": prompt,
            "sampler": {
                "scheduler": type(loaded.pipe.scheduler).__name__,
                "steps": plan.steps,
                "guidance": plan.guidance,
                "guidance_2": plan.guidance_2,
                "shift": plan.shift,
                "cfg": plan.guidance > 1,  # diffusers skips the unconditional pass at 1
            },
            "loras": loaded.loras,
            "quantization": settings.quantization,
            "attention_backend": loaded.attention_backend,
            "compiled": settings.compile,
            "cache": None,
            "context_parallel": settings.context_parallel,
            "memory": self._memory.peak(),
        }
        if loaded.reuse is not None:
            metadata["cache"] = loaded.reuse.summary()
        if request.driving_audio is not None:
            metadata["audio_driven"] = audio_driven
            if not audio_driven:
                metadata["audio_note"] = AUDIO_NOTE
        return metadata

    def close(self) -> None:
        """Drop the pipelines, stop any context-parallel ranks, give the memory back."""
        import torch

        if self._parallel is not None:
            self._parallel.close()
            self._parallel = None
        self.pipeline = self.speech_pipeline = self.speech = None
        if self._extender is not None:
            self._extender.close()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _check_combinations(settings: DiffusersSettings, layout: Layout) -> None:
    """Refuse, before loading anything, switch combinations that cannot work."""
    if settings.long_video == "segments" and layout.guidance_2 is None:
        raise EngineError(
            "long_video 'segments' needs a checkpoint that can continue from one frame "
            "(Wan2.2 I2V-A14B); Wan2.1 FLF2V needs both frames in every clip: use 'retime'"
        )
    if settings.group_offload and settings.cpu_offload:
        raise EngineError("choose one of group_offload and cpu_offload")
    if settings.context_parallel > 1 and (settings.group_offload or settings.cpu_offload):
        raise EngineError("context_parallel keeps each rank's pipeline on its GPU: no offload")
    if settings.s2v_model and (settings.context_parallel > 1 or settings.long_video == "segments"):
        raise EngineError(
            "context_parallel and long_video 'segments' are not available with a "
            "speech-to-video model"
        )


def create_engine(settings: Settings, options: Mapping[str, Any]) -> DiffusersEngine:
    """Build the diffusers engine from engine options, then WANSERVE_DIFFUSERS_* variables."""
    return DiffusersEngine(DiffusersSettings(**options), extender=prompt_extender(options))
