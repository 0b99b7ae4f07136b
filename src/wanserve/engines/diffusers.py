"""The `diffusers` engine: open Wan first+last-frame checkpoints on a local GPU (or CPU).

The pipeline is loaded once per engine (one per worker process; run one worker per GPU
with CUDA_VISIBLE_DEVICES) and kept warm. torch and diffusers are imported inside the
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
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from wanserve.engines.base import EngineContext, FrameStream, GenerationRequest, MediaInput
from wanserve.engines.frames import load_frame
from wanserve.engines.prompt_extend import PromptExtender, prompt_extender
from wanserve.engines.wan_layouts import (
    WAN_NEGATIVE_PROMPT,
    InterpolatorFactory,
    Layout,
    Plan,
    output_frames,
    pipeline_arguments,
    plan_request,
    read_layout,
)
from wanserve.errors import EngineError
from wanserve.settings import Settings

logger = logging.getLogger(__name__)

AUDIO_NOTE = (
    "the installed diffusers has no speech-to-video Wan pipeline: the video is not driven by "
    "the audio, which is muxed into it unchanged"
)
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Progress in units of one denoising step: prompt/image/VAE encoding before the loop, the
# VAE decode after it (Wan's 3D VAE decode costs about two steps), then the frame output.
_ENCODE_UNITS, _DECODE_UNITS, _OUTPUT_UNITS, _RETIME_UNITS = 1.0, 2.0, 1.0, 2.0


class DiffusersSettings(BaseSettings):
    """WANSERVE_DIFFUSERS_* settings; engine options of the same names take precedence."""

    model_config = SettingsConfigDict(env_prefix="WANSERVE_DIFFUSERS_", extra="ignore")

    model: str | None = None  # local folder or hub id of a Diffusers-format Wan checkpoint
    device: Literal["cuda", "cpu"] | None = None  # default: cuda when available
    dtype: Literal["bf16", "fp16", "fp32"] | None = None  # default: bf16 on cuda, fp32 on cpu
    cpu_offload: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention_backend: str | None = None  # e.g. flash, _flash_3, sage, _native_cudnn
    compile: bool = False  # torch.compile the transformer blocks
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


def _device_and_dtype(settings: DiffusersSettings) -> tuple[str, Any]:
    import torch

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("WANSERVE_DIFFUSERS_DEVICE=cuda but torch sees no CUDA GPU")
    name = settings.dtype or ("bf16" if device == "cuda" else "fp32")
    return device, getattr(torch, _DTYPES[name])


def load_pipeline(cls: Any, model: str, settings: DiffusersSettings, layout: Layout) -> Any:
    """Load `model` with `cls.from_pretrained` and apply the memory and speed switches."""
    import torch

    device, dtype = _device_and_dtype(settings)
    # The VAE and CLIP encoder stay in fp32, as Wan's own examples load them.
    dtypes = {"default": dtype, "vae": torch.float32, "image_encoder": torch.float32}
    pipe = cls.from_pretrained(model, dtype=dtypes)
    pipe.set_progress_bar_config(disable=True)
    shift_key = "flow_shift" if "flow_shift" in pipe.scheduler.config else "shift"
    pipe.scheduler = type(pipe.scheduler).from_config(
        pipe.scheduler.config, **{shift_key: layout.shift}
    )
    if settings.vae_tiling:
        pipe.vae.enable_tiling()
    if settings.vae_slicing:
        pipe.vae.enable_slicing()
    for transformer in _transformers(pipe):
        if settings.attention_backend:
            transformer.set_attention_backend(settings.attention_backend)
        if settings.compile:
            transformer.compile_repeated_blocks(fullgraph=True)
    if settings.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def _transformers(pipe: Any) -> list[Any]:
    return [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]


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
        self._steps = plan.steps
        self._total = _ENCODE_UNITS + plan.steps + _DECODE_UNITS + tail

    def after_step(self, step: int) -> float:
        """Share of the job done after denoising step `step` (1-based)."""
        return (_ENCODE_UNITS + step) / self._total

    def before_output(self) -> float:
        """Share done once decoded frames start streaming."""
        return (_ENCODE_UNITS + self._steps + _DECODE_UNITS) / self._total


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
            raise EngineError(f"{settings.model}: {layout.refusal}")
        from diffusers import WanImageToVideoPipeline

        self.settings = settings
        self.layout = layout.tuned(settings.layout_overrides())
        speech_cls = _speech_pipeline_class(settings) if settings.s2v_model else None
        self.device, self.dtype = _device_and_dtype(settings)
        self.pipeline: Any = load_pipeline(
            WanImageToVideoPipeline, settings.model, settings, self.layout
        )
        self.speech_pipeline: Any = (
            load_pipeline(speech_cls, settings.s2v_model, settings, self.layout)
            if speech_cls is not None and settings.s2v_model
            else None
        )
        self._extender = extender
        self._interpolator = interpolator or _flow_interpolator(settings.interpolation_width)
        self._lock = threading.Lock()  # diffusers pipelines keep per-call state on self
        logger.info(
            "diffusers engine ready: %s (%s) on %s, %s",
            settings.model,
            self.layout.name,
            self.device,
            self.dtype,
        )

    def generate(self, request: GenerationRequest, context: EngineContext) -> FrameStream:
        """Generate the request's frames, then stream them resized (and retimed if needed)."""
        context.raise_if_cancelled()
        prompt = request.prompt
        if request.prompt_extend and self._extender is not None:
            prompt = self._extender.extend(request.prompt, job_id=request.job_id)
        plan = plan_request(request, self.layout, negative_prompt=self.settings.negative_prompt)
        progress = _Progress(plan)
        audio_driven = request.driving_audio is not None and self.speech_pipeline is not None
        video = self._denoise(request, plan, prompt, progress, context, audio_driven)
        frames = [np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8) for frame in video]
        metadata = self._metadata(request, plan, prompt, audio_driven)
        return FrameStream(
            fps=plan.fps,
            frame_count=plan.output_frames,
            frames=output_frames(frames, plan, self._interpolator),
            metadata=metadata,
            progress_start=progress.before_output(),
        )

    def _denoise(
        self,
        request: GenerationRequest,
        plan: Plan,
        prompt: str,
        progress: _Progress,
        context: EngineContext,
        audio_driven: bool,
    ) -> np.ndarray:
        """Run the pipeline under the lock; cancel, OOM and hook clean-up handled here."""
        import torch

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            # Raising (not pipe._interrupt) is what skips the costly VAE decode.
            context.raise_if_cancelled()
            context.report_progress(progress.after_step(step + 1))
            return {}

        pipe = self.speech_pipeline if audio_driven else self.pipeline
        arguments = pipeline_arguments(plan, two_experts=self.layout.guidance_2 is not None)
        arguments |= {
            "image": _conditioning_image(request.first_frame, plan),
            "last_image": _conditioning_image(request.last_frame, plan),
            "prompt": prompt,
            "generator": torch.Generator("cpu").manual_seed(plan.seed),
            "callback_on_step_end": on_step_end,
        }
        if audio_driven and request.driving_audio is not None:
            arguments["audio"] = str(request.driving_audio.path)
        with self._lock:
            try:
                return pipe(**arguments).frames[0]
            except torch.OutOfMemoryError as exc:
                raise self._out_of_memory(request, plan) from exc
            finally:
                pipe.maybe_free_model_hooks()

    def _out_of_memory(self, request: GenerationRequest, plan: Plan) -> EngineError:
        """Free what the failed run held and explain the failure."""
        import torch

        logger.exception("job %s: out of GPU memory", request.job_id)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return EngineError(
            f"the GPU ran out of memory generating {plan.num_frames} frames at "
            f"{plan.width}x{plan.height}; try a smaller size or shorter video, or enable "
            "WANSERVE_DIFFUSERS_CPU_OFFLOAD / VAE_TILING",
            code="engine_error",
        )

    def _metadata(
        self, request: GenerationRequest, plan: Plan, prompt: str, audio_driven: bool
    ) -> dict[str, Any]:
        metadata = plan.metadata() | {
            "layout": self.layout.name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "actual_prompt": prompt,
        }
        if request.driving_audio is not None:
            metadata["audio_driven"] = audio_driven
            if not audio_driven:
                metadata["audio_note"] = AUDIO_NOTE
        return metadata

    def close(self) -> None:
        """Drop the pipelines and give their memory back."""
        import torch

        self.pipeline = self.speech_pipeline = None
        if self._extender is not None:
            self._extender.close()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def create_engine(settings: Settings, options: Mapping[str, Any]) -> DiffusersEngine:
    """Build the diffusers engine from engine options, then WANSERVE_DIFFUSERS_* variables."""
    return DiffusersEngine(DiffusersSettings(**options), extender=prompt_extender(options))
