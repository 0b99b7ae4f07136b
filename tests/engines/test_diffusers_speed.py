"""The diffusers engine's speed, memory and long-video switches, on tiny Wan pipelines (CPU)."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("diffusers")
import torch
from wan_helpers import Context, _engine, _request, frames_of

from wanserve.engines import wan_parallel
from wanserve.engines.diffusers import DiffusersEngine
from wanserve.engines.frames import load_frame
from wanserve.errors import EngineError, JobCancelled

A14B = "wan2.2-a14b"


@pytest.fixture(scope="module")
def plain(tiny_models: dict[str, Path]) -> DiffusersEngine:
    return _engine(tiny_models[A14B])


def _job(engine: DiffusersEngine, frames_dir: Path, tmp: Path, **fields: Any) -> tuple:
    stream = engine.generate(_request(frames_dir, **fields), Context(tmp))
    return np.stack(list(stream.frames)), stream.metadata


def _forwards(engine: DiffusersEngine, frames_dir: Path, tmp: Path) -> tuple[int, dict]:
    """Transformer forwards (both experts) in one job, and its metadata."""
    calls: list[int] = []
    hooks = [
        transformer.register_forward_pre_hook(lambda *_: calls.append(1))
        for transformer in engine.loaded.transformers
    ]
    try:
        _, meta = _job(engine, frames_dir, tmp)
    finally:
        for hook in hooks:
            hook.remove()
    return len(calls), meta


def test_lora_at_scale_zero_is_no_lora_at_one_changes_the_frames(
    plain: DiffusersEngine,
    tiny_models: dict[str, Path],
    tiny_lora: Path,
    frames_dir: Path,
    tmp_path: Path,
) -> None:
    without, _ = _job(plain, frames_dir, tmp_path)
    results = {}
    for scale, expert in ((0.0, "both"), (1.0, "both"), (1.0, "low")):
        lora = {"path": str(tiny_lora), "scale": scale, "expert": expert}
        engine = _engine(tiny_models[A14B], loras=[lora])
        results[scale, expert] = _job(engine, frames_dir, tmp_path)
        engine.close()
    assert np.array_equal(without, results[0.0, "both"][0])
    both, both_meta = results[1.0, "both"]
    low, low_meta = results[1.0, "low"]
    assert not np.array_equal(without, both)
    # Two steps at boundary 0.9: the high-noise expert runs the first, the low-noise one
    # the second, so a LoRA on the low expert alone changes less than one on both.
    assert not np.array_equal(without, low) and not np.array_equal(both, low)
    assert both_meta["loras"] == [
        {"path": str(tiny_lora), "scale": 1.0, "experts": ["transformer", "transformer_2"],
         "fused": True}
    ]  # fmt: skip
    assert low_meta["loras"][0]["experts"] == ["transformer_2"]


def test_lora_errors_are_clear(tiny_models: dict[str, Path], tiny_lora: Path) -> None:
    with pytest.raises(EngineError, match="expert 'low' needs a two-expert"):
        _engine(tiny_models["wan2.1-flf2v"], loras=[{"path": str(tiny_lora), "expert": "low"}])
    with pytest.raises(EngineError, match="cannot load the LoRA"):
        _engine(tiny_models[A14B], loras=[{"path": str(tiny_lora / "missing.safetensors")}])


def test_guidance_one_runs_the_transformer_once_per_step(
    plain: DiffusersEngine, tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    distilled = _engine(
        tiny_models[A14B], steps=4, guidance=1.0, guidance_2=1.0, shift=5.0, scheduler="euler"
    )
    forwards, meta = _forwards(distilled, frames_dir, tmp_path)
    assert forwards == 4
    assert meta["sampler"] == {
        "scheduler": "FlowMatchEulerDiscreteScheduler", "steps": 4, "guidance": 1.0,
        "guidance_2": 1.0, "shift": 5.0, "cfg": False,
    }  # fmt: skip
    distilled.close()
    forwards, meta = _forwards(plain, frames_dir, tmp_path)
    assert forwards == 2 * 2 and meta["sampler"]["cfg"] is True


@pytest.mark.parametrize(
    ("cache", "extra", "reused"),
    [
        # A huge threshold: every step after the first answered from the first block.
        ("first_block", {"cache_threshold": 10.0}, 2),
        ("first_block", {"cache_threshold": 1e-9}, 0),
        ("taylorseer", {"cache_interval": 2}, 2),
    ],
)
def test_step_cache_reuses_steps_and_records_it(
    cache: str,
    extra: dict[str, Any],
    reused: int,
    tiny_models: dict[str, Path],
    frames_dir: Path,
    tmp_path: Path,
) -> None:
    engine = _engine(tiny_models[A14B], steps=4, cache=cache, **extra)
    for _ in range(2):  # counted per job, not per engine
        _, meta = _job(engine, frames_dir, tmp_path)
        assert meta["cache"]["method"] == cache
        assert (meta["cache"]["steps_reused"], meta["cache"]["forwards"]) == (reused, 8)
        assert meta["cache"]["forwards_reused"] >= 2 * reused
    engine.close()


def test_int8_quantizes_the_transformers_only(
    plain: DiffusersEngine, tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    from torchao.quantization import Int8Tensor

    engine = _engine(tiny_models[A14B], quantization="int8")
    for transformer in engine.loaded.transformers:
        assert isinstance(transformer.blocks[0].attn1.to_q.weight, Int8Tensor)
    assert not isinstance(engine.pipeline.vae.decoder.conv_in.weight, Int8Tensor)
    assert not isinstance(next(engine.pipeline.text_encoder.parameters()), Int8Tensor)
    quantized, meta = _job(engine, frames_dir, tmp_path)
    reference, _ = _job(plain, frames_dir, tmp_path)
    assert meta["quantization"] == "int8" and quantized.shape == reference.shape
    assert np.abs(quantized.astype(int) - reference).mean() < 2.0  # close, not identical
    engine.close()


def test_fp8_is_refused_without_an_fp8_gpu(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(EngineError, match=r"fp8.*compute capability 8\.9.*use 'int8'"):
        _engine(tiny_models[A14B], quantization="fp8")


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("flash_attn") is not None,
    reason="flash-attn is installed here",
)
def test_missing_attention_backend_falls_back_with_a_log_line(
    tiny_models: dict[str, Path],
    frames_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="wanserve.engines.wan_pipeline"):
        engine = _engine(tiny_models[A14B], attention_backend="flash")
    assert "attention backend flash unavailable" in caplog.text
    _, meta = _job(engine, frames_dir, tmp_path)
    assert meta["attention_backend"] == "native"
    engine.close()


def test_group_offload_gives_the_same_frames_and_memory_is_recorded(
    plain: DiffusersEngine, tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(tiny_models[A14B], group_offload="block", vae_tiling=True)
    offloaded, meta = _job(engine, frames_dir, tmp_path)
    reference, plain_meta = _job(plain, frames_dir, tmp_path)
    assert np.array_equal(offloaded, reference)
    assert meta["memory"]["device"] == "cpu"
    assert plain_meta["memory"]["process_peak_rss_bytes"] > 100 * 2**20
    engine.close()


def test_segmented_long_video_runs_at_native_speed_and_ends_on_the_last_frame(
    tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[dict[str, Any], np.ndarray]] = []
    run_call = wan_parallel.run_call

    def recording(pipe: Any, arguments: dict[str, Any], seed: int, on_step: Any) -> Any:
        video = run_call(pipe, arguments, seed, on_step)
        calls.append((arguments, video))
        return video

    monkeypatch.setattr(wan_parallel, "run_call", recording)
    engine = _engine(tiny_models[A14B], long_video="segments", fps=4)
    context = Context(tmp_path)
    stream = engine.generate(_request(frames_dir, seconds=5), context)
    frames = list(stream.frames)
    # 5 s at 4 fps: 21 frames, beyond the 9-frame budget; three clips of 8, 8 and 4 new
    # frames, none stretched.
    assert len(frames) == stream.frame_count == 21
    assert stream.frame_count / stream.fps == pytest.approx(5.0, abs=1 / stream.fps)
    meta = stream.metadata
    assert (meta["long_video"], meta["segments"], meta["retimed"]) == ("segments", [9, 9, 5], False)
    assert [arguments["num_frames"] for arguments, _ in calls] == [9, 9, 5]
    last = load_frame(frames_dir / "last.png", (64, 64), param="frame", aspect=(64, 64))
    assert calls[0][0]["last_image"] is None and calls[1][0]["last_image"] is None
    assert np.array_equal(np.asarray(calls[2][0]["last_image"]), np.asarray(last))
    for (_, before), (after, _) in itertools.pairwise(calls):
        # Each clip starts on the frame the previous one ended on.
        ended = np.clip(before[-1] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        assert np.array_equal(np.asarray(after["image"]), ended)
    assert context.progress == sorted(context.progress) and len(context.progress) == 3 * 2
    engine.close()


def test_segments_are_refused_for_a_model_that_needs_both_frames(
    tiny_models: dict[str, Path],
) -> None:
    with pytest.raises(EngineError, match=r"segments.*Wan2\.2 I2V-A14B"):
        _engine(tiny_models["wan2.1-flf2v"], long_video="segments")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*all_gather_tensor.*:FutureWarning")  # inside diffusers
def test_context_parallel_on_two_cpu_ranks_gives_the_same_frames(
    plain: DiffusersEngine, tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    reference = frames_of(plain, _request(frames_dir), tmp_path)
    engine = _engine(tiny_models[A14B], context_parallel=2)
    tokens: list[int] = []
    engine.pipeline.transformer.blocks[0].norm1.register_forward_pre_hook(
        lambda module, args: tokens.append(args[0].shape[1])
    )
    try:
        assert np.array_equal(frames_of(engine, _request(frames_dir), tmp_path), reference)
        # Each rank saw half of the 48 video tokens: the sequence really was split.
        assert set(tokens) == {24}
        with pytest.raises(JobCancelled):  # both ranks stop at the same step...
            engine.generate(_request(frames_dir), Context(tmp_path, cancel_at_check=2))
        again = frames_of(engine, _request(frames_dir), tmp_path)  # ...and stay in step
        assert np.array_equal(again, reference)
    finally:
        engine.close()
    assert not torch.distributed.is_initialized()
