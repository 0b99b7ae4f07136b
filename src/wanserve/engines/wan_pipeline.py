"""Loading a Wan pipeline with its speed and memory switches, and what a run cost.

Every switch is diffusers' own: LoRA adapters through WanLoraLoaderMixin (peft), torchao
quantization through `PipelineQuantizationConfig`, attention backends, `torch.compile` of
the repeated blocks, step caches (`enable_cache`), group offloading and VAE tiling. torch
and diffusers are imported inside the functions only.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wanserve.errors import EngineError

if TYPE_CHECKING:
    from wanserve.engines.diffusers import DiffusersSettings
    from wanserve.engines.wan_layouts import Layout

logger = logging.getLogger(__name__)

_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Tried in this order by `attention_backend: auto`; sage is quantized attention, so it is
# only used when asked for by name.
AUTO_ATTENTION = ("_flash_3", "flash", "_native_cudnn")
AUTO_ATTENTION_PARALLEL = ("flash", "_native_cudnn")  # those with context-parallel support
EXPERTS: dict[str, tuple[str, ...]] = {"high": ("transformer",), "low": ("transformer_2",)}
_FP8_CAPABILITY = (8, 9)  # Ada and Hopper: fp8 tensor cores


@dataclass
class LoadedPipeline:
    """A pipeline ready to run, and what was applied to it."""

    pipe: Any
    device: str
    dtype: Any
    attention_backend: str
    loras: list[dict[str, Any]] = field(default_factory=list)
    reuse: StepReuse | None = None

    @property
    def transformers(self) -> list[Any]:
        """The denoisers: one, or the high- and low-noise experts of Wan2.2 A14B."""
        return transformers_of(self.pipe)


def transformers_of(pipe: Any) -> list[Any]:
    """The pipeline's transformer and, when present, its second expert."""
    second = getattr(pipe, "transformer_2", None)
    return [t for t in (pipe.transformer, second) if t is not None]


def device_and_dtype(settings: DiffusersSettings) -> tuple[str, Any]:
    """The torch device name and dtype the settings ask for (defaults by device)."""
    import torch

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("WANSERVE_DIFFUSERS_DEVICE=cuda but torch sees no CUDA GPU")
    name = settings.dtype or ("bf16" if device == "cuda" else "fp32")
    return device, getattr(torch, _DTYPES[name])


def quantization_config(quantization: str | None, device: str, experts: list[str]) -> Any:
    """diffusers' quantization config for the transformers (VAE and encoders untouched)."""
    if quantization is None:
        return None
    try:
        import torchao.quantization as ao
    except ImportError as exc:
        raise EngineError(
            f"quantization {quantization!r} needs torchao: install wanserve[diffusers]"
        ) from exc
    from diffusers import PipelineQuantizationConfig, TorchAoConfig

    if quantization == "fp8":
        _require_fp8(device)
    configs = {
        "fp8": lambda: ao.Float8DynamicActivationFloat8WeightConfig(granularity=ao.PerRow()),
        "int8": ao.Int8WeightOnlyConfig,
        "int8_dynamic": ao.Int8DynamicActivationInt8WeightConfig,
    }
    mapping: dict[str, Any] = {name: TorchAoConfig(configs[quantization]()) for name in experts}
    return PipelineQuantizationConfig(quant_mapping=mapping)


def _require_fp8(device: str) -> None:
    import torch

    if device != "cuda":
        raise EngineError(
            "quantization 'fp8' runs on NVIDIA GPUs with fp8 tensor cores (compute capability "
            f"8.9+: Ada, Hopper) only, not on {device!r}; use 'int8' (weight-only) there"
        )
    capability = torch.cuda.get_device_capability()
    if capability < _FP8_CAPABILITY:
        raise EngineError(
            f"quantization 'fp8' needs compute capability 8.9+ (this GPU is "
            f"{capability[0]}.{capability[1]}); use 'int8_dynamic' or 'int8' on this card"
        )


def load_pipeline(
    cls: Any, model: str, settings: DiffusersSettings, layout: Layout
) -> LoadedPipeline:
    """Load `model` with `cls.from_pretrained`, then apply every configured switch."""
    import torch

    device, dtype = device_and_dtype(settings)
    experts = ["transformer", "transformer_2"] if layout.guidance_2 is not None else ["transformer"]
    # The VAE and CLIP encoder stay in fp32, as Wan's own examples load them.
    dtypes = {"default": dtype, "vae": torch.float32, "image_encoder": torch.float32}
    quantized = quantization_config(settings.quantization, device, experts)
    pipe = cls.from_pretrained(model, dtype=dtypes, quantization_config=quantized)
    pipe.set_progress_bar_config(disable=True)
    _set_scheduler(pipe, settings.scheduler, layout.shift)
    loaded = LoadedPipeline(pipe, device, dtype, attention_backend="native")
    loaded.loras = apply_loras(pipe, settings.loras, fuse=settings.quantization is None)
    if settings.vae_tiling:
        pipe.vae.enable_tiling()
    if settings.vae_slicing:
        pipe.vae.enable_slicing()
    loaded.attention_backend = set_attention_backend(
        loaded.transformers, settings.attention_backend, device, settings.context_parallel > 1
    )
    if settings.cache:
        loaded.reuse = enable_step_cache(loaded.transformers, settings, layout.steps)
    if settings.compile:
        for transformer in loaded.transformers:
            transformer.compile_repeated_blocks(fullgraph=settings.cache is None)
    _place(pipe, settings, device)
    return loaded


def _set_scheduler(pipe: Any, kind: str | None, shift: float) -> None:
    """Keep the checkpoint's scheduler (or switch to flow-matching Euler) at `shift`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    cls = FlowMatchEulerDiscreteScheduler if kind == "euler" else type(pipe.scheduler)
    config = dict(pipe.scheduler.config)
    if kind == "euler":
        config = {"num_train_timesteps": config.get("num_train_timesteps", 1000)}
    key = "flow_shift" if "flow_shift" in pipe.scheduler.config and kind != "euler" else "shift"
    pipe.scheduler = cls.from_config(config, **{key: shift})


def apply_loras(pipe: Any, loras: list[Any], *, fuse: bool) -> list[dict[str, Any]]:
    """Load each LoRA into the experts it names, at its scale; fuse when the base allows."""
    if not loras:
        return []
    names: dict[str, tuple[list[str], list[float]]] = {}
    applied = []
    has_second = getattr(pipe, "transformer_2", None) is not None
    for index, lora in enumerate(loras):
        adapter = f"lora{index}"
        if lora.expert == "low" and not has_second:
            raise EngineError(f"LoRA {index + 1}: expert 'low' needs a two-expert A14B model")
        wanted = EXPERTS.get(lora.expert, ("transformer", "transformer_2"))
        targets = tuple(t for t in wanted if t == "transformer" or has_second)
        for target in targets:
            try:
                pipe.load_lora_weights(
                    lora.path,
                    adapter_name=adapter,
                    weight_name=lora.weight_name,
                    load_into_transformer_2=target == "transformer_2",
                )
            except (OSError, ValueError, KeyError) as exc:
                # The path and the library's text are for the operator's log, not clients.
                logger.error("cannot load the LoRA %r: %s", lora.path, exc)
                raise EngineError(f"cannot load the LoRA {index + 1}") from exc
            names.setdefault(target, ([], []))
            names[target][0].append(adapter)
            names[target][1].append(lora.scale)
        applied.append(
            {"path": lora.path, "scale": lora.scale, "experts": list(targets), "fused": fuse}
        )
    for target, (adapters, scales) in names.items():
        transformer = getattr(pipe, target)
        transformer.set_adapters(adapters, scales)
        if fuse:
            # Merged into the weights: no per-step cost. A quantized base cannot take a
            # merge (fp8), so there the adapters stay beside it.
            transformer.fuse_lora(lora_scale=1.0, adapter_names=adapters)
    logger.info("LoRAs applied: %s", applied)
    return applied


def set_attention_backend(
    transformers: list[Any], backend: str | None, device: str, parallel: bool = False
) -> str:
    """Switch attention to `backend` ('auto': the best installed); fall back to native."""
    if not backend or backend == "native":
        return "native"
    automatic = AUTO_ATTENTION_PARALLEL if parallel else AUTO_ATTENTION
    candidates = automatic if backend == "auto" else (backend,)
    if backend == "auto" and device != "cuda":
        return "native"
    for candidate in candidates:
        try:
            for transformer in transformers:
                transformer.set_attention_backend(candidate)
        except Exception as exc:  # not installed, no kernel for this GPU, or no hub access
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            logger.warning("attention backend %s unavailable (%s)", candidate, reason)
            continue
        return candidate
    for transformer in transformers:
        transformer.set_attention_backend("native")
    logger.warning("attention backend %s unavailable: using native SDPA attention", backend)
    return "native"


def enable_step_cache(
    transformers: list[Any], settings: DiffusersSettings, steps: int
) -> StepReuse:
    """Turn on the configured step cache on every expert and count what it reuses."""
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    threshold = settings.cache_threshold or {"first_block": 0.05, "mag": 0.06}.get(
        settings.cache or ""
    )

    def config() -> Any:
        if settings.cache == "first_block":
            return FirstBlockCacheConfig(threshold=threshold)
        if settings.cache == "mag":
            if not settings.cache_mag_ratios:
                raise EngineError(
                    "cache 'mag' needs cache_mag_ratios (the checkpoint's MagCache magnitude "
                    "ratios); use cache 'first_block' when you have none"
                )
            return MagCacheConfig(
                threshold=threshold,
                num_inference_steps=steps,
                mag_ratios=list(settings.cache_mag_ratios),
            )
        # Wan's attention modules are attn1/attn2, which TaylorSeer's default patterns miss:
        # the lite mode predicts the whole block stack's output instead.
        return TaylorSeerCacheConfig(
            cache_interval=settings.cache_interval,
            disable_cache_before_step=1,
            use_lite_mode=True,
            taylor_factors_dtype=None,
        )

    for transformer in transformers:
        transformer.enable_cache(config())
    described = {"method": settings.cache, "threshold": threshold}
    if settings.cache == "taylorseer":
        described["interval"] = settings.cache_interval
    return StepReuse(transformers, described)


class StepReuse:
    """Counts denoising steps whose every transformer forward the cache answered.

    A forward is computed when the last block's self-attention runs: every diffusers
    cache that skips work (first-block, MagCache, TaylorSeer lite) skips that module.
    """

    def __init__(self, transformers: list[Any], described: dict[str, Any]):
        self.described = described
        self.forwards = self.computed = self.steps_reused = 0
        self._step_forwards = self._step_computed = 0
        for transformer in transformers:
            transformer.register_forward_pre_hook(self._on_forward)
            transformer.blocks[-1].attn1.register_forward_pre_hook(self._on_computed)

    def _on_forward(self, module: Any, args: Any) -> None:
        self.forwards += 1
        self._step_forwards += 1

    def _on_computed(self, module: Any, args: Any) -> None:
        self.computed += 1
        self._step_computed += 1

    def reset(self) -> None:
        """Start counting a new job."""
        self.forwards = self.computed = self.steps_reused = 0
        self._step_forwards = self._step_computed = 0

    def step_done(self) -> None:
        """Close one denoising step."""
        if self._step_forwards and not self._step_computed:
            self.steps_reused += 1
        self._step_forwards = self._step_computed = 0

    def summary(self) -> dict[str, Any]:
        """The cache and its counts, for the job's metadata."""
        return self.described | {
            "steps_reused": self.steps_reused,
            "forwards_reused": self.forwards - self.computed,
            "forwards": self.forwards,
        }


def _place(pipe: Any, settings: DiffusersSettings, device: str) -> None:
    """Put the pipeline on its device, whole or offloaded."""
    import torch

    if settings.group_offload:
        # Blocks stream in from CPU memory as they run, overlapped with compute on CUDA:
        # Wan2.2 A14B's two 14B experts then fit a 24 GB card.
        pipe.enable_group_offload(
            onload_device=torch.device(device),
            offload_device=torch.device("cpu"),
            offload_type=f"{settings.group_offload}_level",
            num_blocks_per_group=settings.group_offload_blocks
            if settings.group_offload == "block"
            else None,
            use_stream=device == "cuda",
        )
    elif settings.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)


class MemoryMeter:
    """Peak memory of one job: the CUDA allocator's peak, or the process's peak RSS."""

    def __init__(self, device: str):
        self.device = device

    def start(self) -> None:
        """Reset the peak before a job."""
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict[str, Any]:
        """The peak since `start`, for the job's metadata."""
        import torch

        if self.device.startswith("cuda"):
            return {
                "device": "cuda",
                "peak_allocated_bytes": int(torch.cuda.max_memory_allocated()),
                "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
            }
        # The CPU has no per-job peak: this is the process's high-water mark so far.
        return {"device": "cpu", "process_peak_rss_bytes": _peak_rss()}


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
