"""Seconds per Wan video on one GPU: plain diffusers against each speed switch, stacked.

GPU run (one CUDA GPU; full-size Wan2.2 A14B expert and Wan VAE with random weights,
nothing downloaded; planned for under 9 minutes on one H200, not run there yet; no new row
starts after --budget seconds):
    python bench/diffusers_wan.py --json results.json [--sizes 480P,720P] [--budget 420]
CPU run on tiny random models (what the test suite builds):
    python bench/diffusers_wan.py --tiny --json tiny.json

Rows, each on top of the one before, at 81 frames and each size:
  baseline   plain diffusers: 40 steps with classifier-free guidance (two forwards a
             step), bf16, native SDPA, eager; two steps timed, then extrapolated to 40
  4-step     a step-distilled sampler: 4 steps, guidance 1 (one forward a step)
  +fp8       torchao fp8 weights and activations, per row (int8 weight-only on the CPU)
  +attention the fastest attention backend installed (flash-3, flash, sage, cuDNN, ...)
  +compile   torch.compile of the repeated transformer blocks
  +cache     diffusers' FirstBlockCache (threshold 0.05) over a real 4-step loop
Seconds per video = steps x s/step + the VAE's encode of the conditioning video and its
decode of the result (timed once per size, fp32 as the engine runs it). The text encoder
(one UMT5 pass, well under a second) is not included. Every ratio is to the baseline
row of the same size in the same run. A14B runs one of its two experts per step; the
other one adds weights (memory), not time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

# transformer/config.json of Wan-AI/Wan2.2-I2V-A14B-Diffusers (each expert).
WAN_A14B = {
    "patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128,
    "in_channels": 36, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
    "ffn_dim": 13824, "num_layers": 40, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}  # fmt: skip
TINY_ARCH = {
    "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12,
    "in_channels": 36, "out_channels": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 32,
    "num_layers": 2, "rope_max_seq_len": 32,
}  # fmt: skip
TINY_VAE = {"base_dim": 3, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
            "temperal_downsample": [False, True, True]}  # fmt: skip
SIZES = {"480P": (832, 480), "720P": (1280, 720), "tiny": (64, 64)}
ATTENTION = ("_flash_3", "flash", "sage", "_native_cudnn", "_native_flash", "_native_efficient")
BASELINE_STEPS, DISTILLED_STEPS, TEXT_TOKENS = 40, 4, 512


class Bench:
    """The machine, the model under test, and the rows measured so far."""

    def __init__(self, args: Any):
        self.args = args
        self.cuda = torch.cuda.is_available() and not args.tiny
        self.device = "cuda" if self.cuda else "cpu"
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.started = time.monotonic()
        self.rows: list[dict[str, Any]] = []
        self.vae: dict[str, dict[str, float]] = {}

    def over_budget(self) -> bool:
        """True once starting another row could run the script past its time budget."""
        return time.monotonic() - self.started > self.args.budget

    def sync(self) -> None:
        """Wait for queued GPU work, so wall time measures it."""
        if self.cuda:
            torch.cuda.synchronize()

    def peak_gib(self) -> float | None:
        """Peak GPU memory since the last reset."""
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None


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


def step_inputs(bench: Bench, config: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """Latents, the image condition and text tokens of one 81-frame video."""
    width, height = size
    latent_frames = (bench.args.frames - 1) // 4 + 1
    shape = (1, 16, latent_frames, height // 8, width // 8)
    generator = torch.Generator(bench.device).manual_seed(0)

    def noise(*dims: int) -> torch.Tensor:
        return torch.randn(dims, generator=generator, device=bench.device, dtype=bench.dtype)

    return {
        "latents": noise(*shape),
        "condition": noise(1, config["in_channels"] - 16, *shape[2:]),
        "text": noise(1, TEXT_TOKENS, config["text_dim"]),
    }


def denoise(model: Any, inputs: dict[str, Any], steps: int, *, cfg: bool) -> int:
    """`steps` Euler steps of a flow-matching sampler (two forwards a step with CFG)."""
    latents = inputs["latents"]
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    forwards = 0
    with torch.no_grad():
        for index in range(steps):
            timestep = torch.tensor([sigmas[index] * 1000.0], device=latents.device)
            hidden = torch.cat([latents, inputs["condition"]], dim=1)
            for context in ("cond", "uncond")[: 2 if cfg else 1]:
                with model.cache_context(context):
                    prediction = model(
                        hidden_states=hidden,
                        timestep=timestep,
                        encoder_hidden_states=inputs["text"],
                        return_dict=False,
                    )[0]
                forwards += 1
            latents = latents + (sigmas[index + 1] - sigmas[index]) * prediction
    return forwards


def measure(bench: Bench, model: Any, inputs: dict[str, Any], *, steps: int, cfg: bool) -> float:
    """Wall seconds per step over `steps` timed steps, after one warm-up forward."""
    denoise(model, inputs, 1, cfg=False)  # kernels autotuned, compiled graphs built
    if model.is_cache_enabled:
        # What a pipeline does after each video: the warm-up must not seed the cache.
        model._reset_stateful_cache()
    bench.sync()
    start = time.perf_counter()
    denoise(model, inputs, steps, cfg=cfg)
    bench.sync()
    return (time.perf_counter() - start) / steps


def time_vae(bench: Bench, size: tuple[int, int]) -> dict[str, float]:
    """Seconds of the VAE's encode of the conditioning video and decode of the result."""
    from diffusers import AutoencoderKLWan

    width, height = size
    vae = AutoencoderKLWan(**(TINY_VAE if bench.args.tiny else {})).to(bench.device).eval()
    video = torch.randn(1, 3, bench.args.frames, height, width, device=bench.device)
    latents = torch.randn(
        1, 16, (bench.args.frames - 1) // 4 + 1, height // 8, width // 8, device=bench.device
    )
    seconds = {}
    with torch.no_grad():
        vae.decode(latents[:, :, :1], return_dict=False)  # cuDNN picks its conv kernels
        for name in ("encode", "decode"):
            bench.sync()
            start = time.perf_counter()
            if name == "encode":
                vae.encode(video)
            else:
                vae.decode(latents, return_dict=False)
            bench.sync()
            seconds[name] = time.perf_counter() - start
    del vae, video, latents
    if bench.cuda:
        torch.cuda.empty_cache()
    return seconds


def quantize(model: Any, bench: Bench) -> str:
    """fp8 rowwise weights and activations on an fp8 GPU; int8 weight-only elsewhere."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
        quantize_,
    )

    fp8 = bench.cuda and torch.cuda.get_device_capability() >= (8, 9)
    config = (
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
        if fp8
        else Int8WeightOnlyConfig()
    )
    # The same torchao configs the engine hands diffusers' TorchAoConfig; blocks only, as
    # diffusers' quantizer skips the patch embedding and the output projection too.
    quantize_(model.blocks, config)
    return "fp8" if fp8 else "int8"


def best_attention(bench: Bench, model: Any, inputs: dict[str, Any]) -> tuple[str, dict]:
    """The fastest installed attention backend by one timed forward; all candidates' times."""
    if not bench.cuda:
        return "native", {"native": None}
    timings: dict[str, float | str] = {}
    for name in ATTENTION:
        try:
            model.set_attention_backend(name)
            timings[name] = measure(bench, model, inputs, steps=1, cfg=False)
        except Exception as exc:  # not installed, or no kernel for this GPU: a result here
            timings[name] = f"unavailable: {str(exc).splitlines()[0][:100]}"
    model.set_attention_backend("native")
    timings["native"] = measure(bench, model, inputs, steps=1, cfg=False)
    timed = {k: v for k, v in timings.items() if isinstance(v, float)}
    best = min(timed, key=timed.__getitem__)
    model.set_attention_backend(best)
    return best, timings


def add_row(bench: Bench, size: str, variant: str, seconds: float, steps: int, **extra: Any):
    """Record and print one row with its ratio to the baseline of the same size."""
    vae = sum(bench.vae.get(size, {}).values())
    video = steps * seconds + vae
    baseline = next((r for r in bench.rows if r["size"] == size and r["variant"] == "baseline"),
                    None)  # fmt: skip
    row = {
        "size": size, "variant": variant, "s_per_step": seconds, "steps": steps,
        "vae_seconds": vae, "seconds_per_video": video, "peak_gib": bench.peak_gib(),
        "speedup": baseline["seconds_per_video"] / video if baseline else 1.0,
    } | extra  # fmt: skip
    bench.rows.append(row)
    peak = f"{row['peak_gib']:9.1f}" if row["peak_gib"] is not None else f"{'-':>9}"
    note = "  " + ", ".join(f"{k}={v}" for k, v in extra.items()) if extra else ""
    print(f"{size:5} {variant:10} {seconds:9.3f} {steps:5d} {video:9.1f} {peak} "
          f"{row['speedup']:7.1f}x{note}", flush=True)  # fmt: skip


def run_size(bench: Bench, model: Any, config: dict[str, Any], size: str, stage: str) -> None:
    """One stage (a row) at one size."""
    inputs = step_inputs(bench, config, SIZES[size])
    timed = 2 if size == "720P" else bench.args.steps  # 720P: two steps, extrapolated
    if bench.cuda:
        torch.cuda.reset_peak_memory_stats()
    if stage == "baseline":
        seconds = measure(bench, model, inputs, steps=2, cfg=True)
        add_row(bench, size, stage, seconds, BASELINE_STEPS, timed_steps=2)
    elif stage == "+cache":
        from wanserve.engines.wan_pipeline import StepReuse

        reuse = StepReuse([model], {"method": "first_block", "threshold": 0.05})
        seconds = measure(bench, model, inputs, steps=DISTILLED_STEPS, cfg=False)
        # Counted over the warm-up forward and the timed loop.
        add_row(bench, size, stage, seconds, DISTILLED_STEPS,
                forwards_reused=reuse.forwards - reuse.computed)  # fmt: skip
    else:
        seconds = measure(bench, model, inputs, steps=timed, cfg=False)
        add_row(bench, size, stage, seconds, DISTILLED_STEPS, timed_steps=timed)


def run(bench: Bench) -> None:
    """Every stage at every size, the model changed between stages, within the budget."""
    config = TINY_ARCH if bench.args.tiny else WAN_A14B
    sizes = ["tiny"] if bench.args.tiny else bench.args.sizes.split(",")
    for size in sizes:
        bench.vae[size] = time_vae(bench, SIZES[size])
        print(f"VAE {size}: encode {bench.vae[size]['encode']:.2f} s, "
              f"decode {bench.vae[size]['decode']:.2f} s", flush=True)  # fmt: skip
    model = build_transformer(config, bench.device, bench.dtype)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"\ntransformer: {params:.2f} B params, {bench.dtype}, {bench.device}, "
          f"{bench.args.frames} frames")  # fmt: skip
    print(f"{'size':5} {'variant':10} {'s/step':>9} {'steps':>5} {'s/video':>9} "
          f"{'peak GiB':>9} {'ratio':>8}")  # fmt: skip
    stages = ["baseline", "4-step", "+fp8", "+attention", "+compile", "+cache"]
    for stage in stages:
        if bench.over_budget():
            print(f"{stage}: skipped, past the {bench.args.budget:.0f} s budget", flush=True)
            continue
        try:
            _enter(bench, model, config, stage, sizes)
        except Exception as exc:  # a switch that fails on this machine is a result too
            print(f"{stage}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            bench.rows.append({"variant": stage, "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        for size in sizes:
            if not bench.over_budget():
                run_size(bench, model, config, size, stage)


def _enter(bench: Bench, model: Any, config: dict[str, Any], stage: str, sizes: list) -> None:
    """Change the model for `stage` (every stage keeps the ones before it)."""
    if stage == "+fp8":
        bench.quantized = quantize(model, bench)
        print(f"quantized: {bench.quantized}", flush=True)
    elif stage == "+attention":
        inputs = step_inputs(bench, config, SIZES[sizes[0]])
        best, timings = best_attention(bench, model, inputs)
        bench.attention = {"best": best, "seconds_per_forward": timings}
        print(f"attention: {best} ({timings})", flush=True)
    elif stage == "+compile":
        # Not fullgraph: the next stage's cache hook breaks the graph on purpose.
        model.compile_repeated_blocks(fullgraph=False)
    elif stage == "+cache":
        from diffusers import FirstBlockCacheConfig

        model.enable_cache(FirstBlockCacheConfig(threshold=0.05))


def engine_rows(bench: Bench) -> list[dict[str, Any]]:
    """The same stages end to end through DiffusersEngine on the tiny test pipeline."""
    import tempfile

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engines"))
    import tiny_wan
    from wan_helpers import Context, _engine, _request

    stages: list[tuple[str, dict[str, Any]]] = [
        ("baseline", {"steps": 8}),
        ("4-step", {"steps": 4, "guidance": 1.0, "guidance_2": 1.0, "scheduler": "euler"}),
        ("+int8", {"quantization": "int8"}),
        ("+cache", {"cache": "first_block"}),
    ]
    print(f"\n{'engine':10} {'load s':>7} {'job s':>7} {'ratio':>7}  (tiny A14B, 64x64, 2 s)")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        model = tiny_wan.build_tiny_pipeline("wan2.2-a14b", Path(folder) / "a14b")
        rng = np.random.default_rng(0)
        for name in ("first.png", "last.png"):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(Path(folder) / name)
        switches: dict[str, Any] = {}
        for stage, extra in stages:
            switches |= extra
            start = time.perf_counter()
            engine = _engine(model, **switches)
            loaded = time.perf_counter() - start
            list(engine.generate(_request(Path(folder)), Context(Path(folder))).frames)
            jobs = []
            for _ in range(3):  # best of 3: the least disturbed run on a shared CPU
                start = time.perf_counter()
                stream = engine.generate(_request(Path(folder)), Context(Path(folder)))
                list(stream.frames)
                jobs.append(time.perf_counter() - start)
            engine.close()
            ratio = rows[0]["job_seconds"] / min(jobs) if rows else 1.0
            rows.append({"variant": stage, "load_seconds": loaded, "job_seconds": min(jobs),
                         "speedup": ratio, "cache": stream.metadata["cache"]})  # fmt: skip
            print(f"{stage:10} {loaded:7.2f} {min(jobs):7.3f} {ratio:6.1f}x", flush=True)
    return rows


def _versions() -> dict[str, Any]:
    import diffusers

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "diffusers": diffusers.__version__, "machine": platform.machine(),
    }  # fmt: skip
    try:
        import torchao

        info["torchao"] = torchao.__version__
    except ImportError:
        info["torchao"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _quiet() -> None:
    """No progress bars or experimental-feature notes between the table rows."""
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def _arguments() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--tiny", action="store_true", help="CPU run on tiny random models")
    parser.add_argument("--sizes", default="480P,720P")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per 4-step row")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which no new row starts")  # fmt: skip
    return parser.parse_args()


def main() -> int:
    """Run the benchmark the arguments ask for and write its JSON."""
    args = _arguments()
    if args.tiny:
        args.frames = 9  # the tiny models' frame budget, as the tests use them
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    _quiet()
    torch.manual_seed(0)
    bench = Bench(args)
    if not bench.cuda and not args.tiny:
        print("bench/diffusers_wan.py: no CUDA GPU here; the full-size rows need one "
              "(~60 GiB free for 720P). Use --tiny for the CPU run.", file=sys.stderr)  # fmt: skip
        return 2
    info = _versions()
    print(json.dumps(info), flush=True)
    run(bench)
    engine = engine_rows(bench) if args.tiny else None
    result = info | {
        "engine_rows": engine,
        "frames": args.frames, "vae_seconds": bench.vae, "rows": bench.rows,
        "attention": getattr(bench, "attention", None),
        "quantized": getattr(bench, "quantized", None),
        "wall_seconds": time.monotonic() - bench.started,
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json} after {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
