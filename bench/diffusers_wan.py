"""Seconds per denoising step of the open Wan transformers, and what each speed switch buys.

GPU run (one CUDA GPU; full-size architectures with random weights, nothing downloaded):
    .venv/bin/python bench/diffusers_wan.py [--arch flf2v,a14b] [--sizes 480P,720P]
        [--variants baseline,_native_cudnn,flash,_flash_3,sage,compile] [--steps 2]
CPU run on the tiny test pipelines (what the test suite builds):
    .venv/bin/python bench/diffusers_wan.py --tiny

One denoising step is two transformer forwards (conditional and unconditional, as with
classifier-free guidance) on an 81-frame video. Every variant is measured in the same
run as the plain diffusers baseline (native SDPA attention, eager) and printed with its
ratio to it, with the peak GPU memory. A Wan2.2 A14B step runs one of its two experts;
both together hold about twice the weights (or use WANSERVE_DIFFUSERS_CPU_OFFLOAD).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

# Published transformer configs (transformer/config.json of the Diffusers repositories).
_WAN_14B = {
    "patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128,
    "in_channels": 36, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
    "ffn_dim": 13824, "num_layers": 40, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}  # fmt: skip
ARCHS = {
    "flf2v": _WAN_14B | {"image_dim": 1280, "added_kv_proj_dim": 5120, "pos_embed_seq_len": 514},
    "a14b": dict(_WAN_14B),
}
TINY_ARCH = {
    "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12,
    "in_channels": 36, "out_channels": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 32,
    "num_layers": 2, "rope_max_seq_len": 32,
}  # fmt: skip
SIZES = {"480P": (832, 480), "720P": (1280, 720), "tiny": (64, 64)}
VARIANTS = ("baseline", "_native_cudnn", "flash", "_flash_3", "sage", "compile")
TEXT_TOKENS = 512


def build_transformer(config: dict[str, Any], device: str, dtype: torch.dtype) -> Any:
    """A WanTransformer3DModel with random weights, made without a full fp32 copy in memory."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from diffusers import WanTransformer3DModel

    with init_empty_weights():  # parameters on the meta device; buffers (RoPE) stay real
        model: Any = WanTransformer3DModel(**config)
    keep = model._keep_in_fp32_modules
    for name, param in list(model.named_parameters()):
        wanted = torch.float32 if any(part in keep for part in name.split(".")) else dtype
        value = torch.empty(param.shape, dtype=wanted, device=device).normal_(0.0, 0.02)
        set_module_tensor_to_device(model, name, device, value=value)
    return model.to(device).eval()


def step_inputs(
    config: dict[str, Any], size: tuple[int, int], frames: int, device: str, dtype: torch.dtype
) -> dict[str, Any]:
    """Transformer inputs of one step: latents + condition, timestep, text and image tokens."""
    width, height = size
    latent_frames = (frames - 1) // 4 + 1
    shape = (1, config["in_channels"], latent_frames, height // 8, width // 8)
    generator = torch.Generator(device).manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(shape, generator=generator, device=device, dtype=dtype),
        "timestep": torch.tensor([500], device=device),
        "encoder_hidden_states": torch.randn(
            1, TEXT_TOKENS, config["text_dim"], device=device, dtype=dtype
        ),
        "return_dict": False,
    }
    if config.get("image_dim"):
        image_tokens = config.get("pos_embed_seq_len") or 257
        inputs["encoder_hidden_states_image"] = torch.randn(
            1, image_tokens, config["image_dim"], device=device, dtype=dtype
        )
    return inputs


def apply_variant(model: Any, variant: str) -> None:
    """Switch the model to `variant`: an attention backend name, or compile."""
    if variant == "compile":
        model.set_attention_backend("native")
        model.compile_repeated_blocks(fullgraph=True)
    elif variant != "baseline":
        model.set_attention_backend(variant)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(
    model: Any, inputs: dict[str, Any], device: str, *, warmup: int, steps: int
) -> float:
    """Median wall seconds of one guided denoising step (two forwards)."""
    times = []
    with torch.no_grad():
        for index in range(warmup + steps):
            _sync(device)
            start = time.perf_counter()
            for _ in range(2):  # conditional and unconditional prediction
                model(**inputs)
            _sync(device)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_arch(
    name: str, config: dict[str, Any], sizes: list[str], variants: list[str], args: Any
) -> None:
    """Print one table: every size x variant against the baseline of the same run."""
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build_transformer(config, device, dtype)
    print(f"\n{name}: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B params, "
          f"{dtype}, {device}, {args.frames} frames")  # fmt: skip
    print(f"{'size':6} {'variant':14} {'s/step':>9} {'ratio':>7} {'peak GiB':>9}")
    baselines: dict[str, float] = {}
    # compile changes the model for good: measure it after every attention backend.
    for variant in sorted(variants, key=lambda v: v == "compile"):
        try:
            apply_variant(model, variant)
        except Exception as exc:  # an unavailable backend is a result here
            print(f"{'':6} {variant:14} unavailable: {str(exc).splitlines()[0][:80]}")
            continue
        for size in sizes:
            _row(model, config, size, variant, device, dtype, baselines, args)
        if variant != "compile":
            model.set_attention_backend("native")
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def _row(model, config, size, variant, device, dtype, baselines, args) -> None:
    inputs = step_inputs(config, SIZES[size], args.frames, device, dtype)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup = args.warmup + (1 if variant == "compile" else 0)
    try:
        seconds = seconds_per_step(model, inputs, device, warmup=warmup, steps=args.steps)
    except torch.OutOfMemoryError:
        print(f"{size:6} {variant:14} out of memory")
        torch.cuda.empty_cache()
        return
    except Exception as exc:
        print(f"{size:6} {variant:14} failed: {str(exc).splitlines()[0][:80]}")
        return
    baselines.setdefault(size, seconds) if variant == "baseline" else None
    ratio = baselines[size] / seconds if size in baselines else float("nan")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"{size:6} {variant:14} {seconds:9.3f} {ratio:6.2f}x {peak:9.1f}")


def bench_tiny_pipelines(steps: int) -> None:
    """End to end through the engine on the tiny test pipelines, split into its phases."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engines"))
    import tiny_wan

    from wanserve.engines.diffusers import DiffusersEngine, DiffusersSettings

    print(f"\ntiny pipelines through DiffusersEngine: 64x64, 9 frames -> 33, {steps} steps, cpu")
    print(f"{'layout':14} {'variant':9} {'load':>6} {'encode':>7} {'s/step':>7} "
          f"{'decode':>7} {'output':>7} {'job':>6}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        frames = _tiny_frames(Path(folder))
        for layout in ("wan2.1-flf2v", "wan2.2-a14b"):
            model = tiny_wan.build_tiny_pipeline(layout, Path(folder) / layout)
            variants: list[tuple[str, dict[str, Any]]] = [
                ("baseline", {}),
                ("compile", {"compile": True}),
            ]
            for variant, switches in variants:
                settings = DiffusersSettings(
                    model=str(model), device="cpu", steps=steps, frame_budget=9,
                    max_area=64 * 64, interpolation_width=64, **switches,
                )  # fmt: skip
                start = time.perf_counter()
                engine = DiffusersEngine(settings)
                loaded = time.perf_counter() - start
                list(engine.generate(_tiny_request(frames), _Clock()).frames)  # warm-up/compile
                # Best of 3: on a shared CPU the minimum is the least disturbed run.
                runs = [_timed_job(engine, _tiny_request(frames)) for _ in range(3)]
                phases = tuple(min(column) for column in zip(*runs, strict=True))
                print(f"{layout:14} {variant:9} {loaded:6.2f} " + " ".join(
                    f"{value:7.3f}" for value in phases))  # fmt: skip
                engine.close()


def _timed_job(engine: Any, request: Any) -> tuple[float, ...]:
    """(encode, median step, decode, frame output, whole job) wall seconds of one job."""
    clock = _Clock()
    start = time.perf_counter()
    stream = engine.generate(request, clock)
    returned = time.perf_counter()
    list(stream.frames)
    done = time.perf_counter()
    step = clock.per_step()
    encode = clock.stamps[0] - start - step
    return encode, step, returned - clock.stamps[-1], done - returned, done - start


class _Clock:
    """An EngineContext that timestamps each reported denoising step."""

    def __init__(self) -> None:
        self.work_dir = Path(tempfile.gettempdir())
        self.stamps: list[float] = []
        self.state: dict[str, Any] = {}

    def report_progress(self, fraction: float) -> None:
        self.stamps.append(time.perf_counter())

    def raise_if_cancelled(self) -> None:
        pass

    def save_state(self, state: Any) -> None:
        pass

    def per_step(self) -> float:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return statistics.median(gaps) if gaps else float("nan")


def _tiny_frames(folder: Path) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = folder / "first.png", folder / "last.png"
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return paths


def _tiny_request(frames: tuple[Path, Path]) -> Any:
    from wanserve.engines.base import GenerationRequest, MediaInput

    first, last = (MediaInput(path, "image/png") for path in frames)
    return GenerationRequest(
        job_id="bench", model="wan-open", prompt="a cat walks", negative_prompt="",
        first_frame=first, last_frame=last, driving_audio=None, width=64, height=64,
        seconds=2, seed=1, prompt_extend=False,
    )  # fmt: skip


def _quiet() -> None:
    """No progress bars or experimental-feature notes between the table rows."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _arguments() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU run on the tiny pipelines")
    parser.add_argument("--arch", default="flf2v,a14b", help="flf2v, a14b")
    parser.add_argument("--sizes", default="480P,720P")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=2, help="measured steps per row")
    parser.add_argument("--warmup", type=int, default=1)
    return parser.parse_args()


def main() -> int:
    """Run the benchmark the arguments ask for."""
    args = _arguments()
    variants = [v for v in args.variants.split(",") if v]
    if args.tiny:
        args.frames, args.warmup, args.steps = 9, max(args.warmup, 3), max(args.steps, 10)
        _quiet()
        torch.manual_seed(0)
        bench_arch("tiny transformer", TINY_ARCH, ["tiny"], ["baseline", "compile"], args)
        bench_tiny_pipelines(steps=8)
        return 0
    if not torch.cuda.is_available():
        print("bench/diffusers_wan.py: no CUDA GPU here; the full-size runs need one "
              "(~40 GiB free for 720P). Use --tiny for the CPU run.", file=sys.stderr)  # fmt: skip
        return 2
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name in args.arch.split(","):
        bench_arch(f"wan {name}", ARCHS[name], args.sizes.split(","), variants, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
