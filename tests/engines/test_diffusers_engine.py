"""The diffusers engine on tiny random Wan checkpoints, through the real from_pretrained path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("diffusers")
import torch
from wan_helpers import TINY, Context, _engine, _request

from wanserve.engines.base import MediaInput
from wanserve.engines.diffusers import DiffusersEngine, DiffusersSettings, create_engine
from wanserve.engines.prompt_extend import PromptExtender, PromptExtendSettings
from wanserve.errors import EngineError, JobCancelled
from wanserve.settings import Settings


@pytest.fixture(scope="module")
def flf2v(tiny_models: dict[str, Path]) -> DiffusersEngine:
    return _engine(tiny_models["wan2.1-flf2v"])


@pytest.fixture(scope="module")
def a14b(tiny_models: dict[str, Path]) -> DiffusersEngine:
    return _engine(tiny_models["wan2.2-a14b"])


@pytest.mark.parametrize("layout", ["wan2.1-flf2v", "wan2.2-a14b"])
def test_frames_have_output_size_and_duration(
    layout: str, flf2v: DiffusersEngine, a14b: DiffusersEngine, frames_dir: Path, tmp_path: Path
) -> None:
    engine = {"wan2.1-flf2v": flf2v, "wan2.2-a14b": a14b}[layout]
    stream = engine.generate(_request(frames_dir, width=96, height=64), Context(tmp_path))
    frames = list(stream.frames)
    assert stream.fps == 16
    assert len(frames) == stream.frame_count == 2 * 16 + 1
    assert {(f.shape, f.dtype) for f in frames} == {((64, 96, 3), np.dtype(np.uint8))}
    meta = stream.metadata
    assert meta["layout"] == layout
    assert (meta["working_size"], meta["num_frames"], meta["retimed"]) == ("64x48", 9, True)
    assert (meta["steps"], meta["dtype"], meta["seed"]) == (2, "float32", 7)
    assert meta["actual_prompt"] == "a cat walks"
    assert "audio_driven" not in meta


def test_retimed_frames_come_from_flow_interpolation(
    tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(tiny_models["wan2.1-flf2v"], interpolator=None)  # the default: flow
    stream = engine.generate(_request(frames_dir), Context(tmp_path))
    frames = list(stream.frames)
    assert len(frames) == 33 and stream.metadata["retimed"] is True
    assert {f.shape for f in frames} == {(64, 64, 3)}


def test_frames_within_budget_are_not_retimed(
    tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(tiny_models["wan2.2-a14b"], fps=4)  # 2 s at 4 fps: 9 frames, the budget
    stream = engine.generate(_request(frames_dir), Context(tmp_path))
    assert len(list(stream.frames)) == stream.frame_count == 9
    assert stream.metadata["retimed"] is False
    assert stream.metadata["guidance_2"] == 3.5


def test_progress_rises_with_each_step(
    tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(tiny_models["wan2.1-flf2v"], steps=3)
    context = Context(tmp_path)
    stream = engine.generate(_request(frames_dir), context)
    assert len(context.progress) == 3
    assert context.progress == sorted(set(context.progress))
    assert context.progress[0] > 0 and context.progress[-1] < stream.progress_start < 1


def test_cancel_stops_before_decoding(
    flf2v: DiffusersEngine, frames_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes: list[Any] = []
    decode = flf2v.pipeline.vae.decode
    monkeypatch.setattr(
        flf2v.pipeline.vae, "decode", lambda *a, **k: decodes.append(1) or decode(*a, **k)
    )
    context = Context(tmp_path, cancel_at_check=2)  # the check after the first step
    with pytest.raises(JobCancelled):
        flf2v.generate(_request(frames_dir), context)
    assert decodes == [] and len(context.progress) == 0
    stream = flf2v.generate(_request(frames_dir), Context(tmp_path))  # still usable
    assert len(list(stream.frames)) == 33 and decodes == [1]


def test_same_seed_same_frames(flf2v: DiffusersEngine, frames_dir: Path, tmp_path: Path) -> None:
    def run(seed: int) -> np.ndarray:
        stream = flf2v.generate(_request(frames_dir, seed=seed), Context(tmp_path))
        return np.stack(list(stream.frames))

    first = run(3)
    assert np.array_equal(first, run(3))
    assert not np.array_equal(first, run(4))


def test_ti2v_layout_is_refused(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(EngineError, match=r"TI2V-5B.*last frame"):
        _engine(tiny_models["wan2.2-ti2v-5b"])


def test_out_of_memory_is_an_engine_error_and_engine_recovers(
    a14b: DiffusersEngine, frames_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forward = a14b.pipeline.transformer.forward
    calls: list[int] = []

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(a14b.pipeline.transformer, "forward", failing_once)
    with pytest.raises(EngineError, match="ran out of memory") as caught:
        a14b.generate(_request(frames_dir), Context(tmp_path))
    assert caught.value.code == "engine_error"
    stream = a14b.generate(_request(frames_dir), Context(tmp_path))
    assert len(list(stream.frames)) == 33


def test_driving_audio_is_reported_as_not_driving(
    a14b: DiffusersEngine, frames_dir: Path, tmp_path: Path
) -> None:
    audio = MediaInput(frames_dir / "speech.wav", "audio/wav")
    stream = a14b.generate(_request(frames_dir, driving_audio=audio), Context(tmp_path))
    assert stream.metadata["audio_driven"] is False
    assert "muxed" in stream.metadata["audio_note"]


def test_speech_model_without_pipeline_class_is_refused(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(EngineError, match="WanSpeechToVideoPipeline"):
        _engine(tiny_models["wan2.2-a14b"], s2v_model=str(tiny_models["wan2.2-a14b"]))


def test_speech_pipeline_plugs_in_by_configuration(
    tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffusers

    heard: list[str] = []

    class SpeechPipeline(diffusers.WanImageToVideoPipeline):
        def __call__(self, *args: Any, audio: str, **kwargs: Any) -> Any:
            heard.append(audio)
            return super().__call__(*args, **kwargs)

    monkeypatch.setattr(diffusers, "WanSpeechToVideoPipeline", SpeechPipeline, raising=False)
    model = str(tiny_models["wan2.2-a14b"])
    engine = _engine(tiny_models["wan2.2-a14b"], s2v_model=model)
    audio = MediaInput(frames_dir / "speech.wav", "audio/wav")
    stream = engine.generate(_request(frames_dir, driving_audio=audio), Context(tmp_path))
    assert heard == [str(audio.path)] and stream.metadata["audio_driven"] is True


def test_module_import_does_not_import_torch() -> None:
    code = "import sys, wanserve.engines.diffusers; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANSERVE_DIFFUSERS_STEPS", "5")
    monkeypatch.setenv("WANSERVE_DIFFUSERS_VAE_TILING", "true")
    settings = DiffusersSettings(**{"steps": 2, "engine": "diffusers"})
    assert (settings.steps, settings.vae_tiling) == (2, True)
    assert settings.layout_overrides()["steps"] == 2


def test_create_engine_needs_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANSERVE_DIFFUSERS_MODEL", raising=False)
    with pytest.raises(EngineError, match="WANSERVE_DIFFUSERS_MODEL"):
        create_engine(Settings(), {})


def test_extended_prompt_is_used_and_reported(
    tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        return httpx.Response(
            200, json={"choices": [{"message": {"content": prompt + ", slowly"}}]}
        )

    settings = PromptExtendSettings(url="http://127.0.0.1:9/v1", model="qwen-plus")
    extender = PromptExtender(settings, transport=httpx.MockTransport(chat))
    engine = DiffusersEngine(
        DiffusersSettings(model=str(tiny_models["wan2.1-flf2v"]), **TINY), extender=extender
    )
    extended = engine.generate(_request(frames_dir, prompt_extend=True), Context(tmp_path))
    assert extended.metadata["actual_prompt"] == "a cat walks, slowly"
    plain = engine.generate(_request(frames_dir, prompt_extend=False), Context(tmp_path))
    assert plain.metadata["actual_prompt"] == "a cat walks"
    engine.close()


_OTHER_PROCESS = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from wan_helpers import Context, _engine, _request
from pathlib import Path
engine = _engine(Path(sys.argv[1]))
stream = engine.generate(_request(Path(sys.argv[2])), Context(Path(sys.argv[2])))
np.save(sys.argv[4], np.stack(list(stream.frames)))
"""


@pytest.mark.slow
def test_same_seed_same_frames_in_another_process(
    flf2v: DiffusersEngine, tiny_models: dict[str, Path], frames_dir: Path, tmp_path: Path
) -> None:
    here = np.stack(list(flf2v.generate(_request(frames_dir), Context(tmp_path)).frames))
    out = tmp_path / "frames.npy"
    argv = [str(tiny_models["wan2.1-flf2v"]), str(frames_dir), str(Path(__file__).parent), str(out)]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, *argv], check=True, env=env)
    assert np.array_equal(here, np.load(out))


@pytest.mark.parametrize("layout", ["wan2.1-flf2v", "wan2.2-a14b"])
def test_a_continuation_without_a_last_frame_is_image_to_video(
    layout: str, flf2v: DiffusersEngine, a14b: DiffusersEngine, frames_dir: Path, tmp_path: Path
) -> None:
    # The worker hands the clip's last frame over as the first frame; no last frame to reach.
    engine = {"wan2.1-flf2v": flf2v, "wan2.2-a14b": a14b}[layout]
    clip = MediaInput(frames_dir / "first.png", "video/mp4", duration=3.0)
    request = _request(frames_dir, width=96, height=64, last_frame=None, first_clip=clip)
    if layout == "wan2.1-flf2v":  # its image encoder conditions on two frames
        with pytest.raises(EngineError, match="needs a last frame"):
            engine.generate(request, Context(tmp_path))
        return
    frames = list(engine.generate(request, Context(tmp_path)).frames)
    assert len(frames) == 2 * 16 + 1
    assert {f.shape for f in frames} == {(64, 96, 3)}
