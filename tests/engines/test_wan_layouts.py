"""Layout detection and the request -> pipeline mapping, without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wanserve.engines.base import GenerationRequest, MediaInput
from wanserve.engines.wan_layouts import (
    A14B,
    FLF2V,
    I2V,
    TI2V_5B,
    WAN_NEGATIVE_PROMPT,
    Layout,
    detect_layout,
    join_clips,
    output_frames,
    pipeline_arguments,
    plan_request,
    segment_frames,
    segment_spans,
    valid_frame_count,
    working_size,
)
from wanserve.errors import EngineError

NONE = [None, None]
CLIP = ["transformers", "CLIPVisionModel"]
WAN = ["diffusers", "WanTransformer3DModel"]
I2V_CLASS = "WanImageToVideoPipeline"


@pytest.mark.parametrize(
    ("index", "transformer", "layout"),
    [
        ({"image_encoder": CLIP, "transformer_2": NONE}, {"pos_embed_seq_len": 514}, FLF2V),
        ({"image_encoder": CLIP, "transformer_2": NONE}, {"pos_embed_seq_len": None}, I2V),
        ({"image_encoder": NONE, "transformer_2": WAN, "boundary_ratio": 0.9}, {}, A14B),
        ({"_class_name": "WanPipeline", "expand_timesteps": True}, {}, TI2V_5B),
    ],
)
def test_detects_layouts(
    index: dict[str, Any], transformer: dict[str, Any], layout: Layout
) -> None:
    assert detect_layout({"_class_name": I2V_CLASS} | index, transformer) == layout


def test_only_the_first_last_frame_layouts_are_accepted() -> None:
    assert FLF2V.refusal is None and A14B.refusal is None
    assert TI2V_5B.refusal and "ignore the last frame" in TI2V_5B.refusal
    assert I2V.refusal and "pos_embed_seq_len" in I2V.refusal


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ({"_class_name": "FluxPipeline"}, "not a Wan image-to-video"),
        ({"_class_name": "WanPipeline", "transformer_2": NONE}, "text-to-video"),
    ],
)
def test_refuses_other_checkpoints(index: dict[str, Any], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        detect_layout(index, {})


@pytest.mark.parametrize(
    ("aspect", "area", "size"),
    [
        (16 / 9, 832 * 480, (832, 464)),
        (832 / 480, 832 * 480, (832, 480)),
        (16 / 9, 1280 * 720, (1280, 720)),
        (9 / 16, 1280 * 720, (720, 1280)),
        (1.0, 1280 * 720, (960, 960)),
        (8.0, 64 * 64, (176, 16)),
    ],
)
def test_working_size(aspect: float, area: int, size: tuple[int, int]) -> None:
    width, height = working_size(aspect, area)
    assert (width, height) == size
    assert width % 16 == 0 and height % 16 == 0 and width * height <= area


def test_valid_frame_counts_are_4k_plus_1() -> None:
    assert [valid_frame_count(n) for n in (1, 4, 5, 9, 80, 81, 84)] == [1, 1, 5, 9, 77, 81, 81]


def _request(**fields: Any) -> GenerationRequest:
    frame = MediaInput(Path("frame.png"), "image/png")
    values: dict[str, Any] = {
        "job_id": "video_1", "model": "m", "prompt": "p", "negative_prompt": "",
        "first_frame": frame, "last_frame": frame, "driving_audio": None,
        "width": 1280, "height": 720, "seconds": 5, "seed": 1, "size_label": "720P",
    }  # fmt: skip
    return GenerationRequest(**(values | fields))


def test_five_seconds_is_wans_native_81_frames() -> None:
    plan = plan_request(_request(), A14B, negative_prompt=WAN_NEGATIVE_PROMPT)
    assert (plan.width, plan.height, plan.num_frames, plan.output_frames) == (1280, 720, 81, 81)
    assert not plan.retimed and plan.fps == 16
    assert plan.negative_prompt == WAN_NEGATIVE_PROMPT
    assert (plan.steps, plan.guidance, plan.guidance_2, plan.shift) == (40, 3.5, 3.5, 5.0)


def test_longer_than_the_budget_is_retimed() -> None:
    plan = plan_request(_request(seconds=15, negative_prompt="blur"), FLF2V, negative_prompt="x")
    assert (plan.num_frames, plan.output_frames, plan.retimed) == (81, 241, True)
    assert plan.negative_prompt == "blur"


def test_segments_make_a_long_video_at_native_speed() -> None:
    plan = plan_request(_request(seconds=15), A14B, negative_prompt="", long_video="segments")
    assert (plan.segments, plan.output_frames, plan.retimed) == ((81, 81, 81), 241, False)
    assert plan.metadata()["long_video"] == "segments"
    short = plan_request(_request(seconds=5), A14B, negative_prompt="", long_video="segments")
    assert (short.segments, short.clips, short.metadata()["segments"]) == ((), (81,), None)


@pytest.mark.parametrize(
    ("output", "budget", "spans", "frames"),
    [
        (241, 81, [80, 80, 80], (81, 81, 81)),
        (177, 81, [60, 60, 56], (61, 61, 57)),  # 11 s: whole latent frames, none retimed
        (22, 9, [8, 8, 5], (9, 9, 9)),  # 21 new frames: the last clip is thinned to 6
    ],
)
def test_segment_spans_cover_the_video(
    output: int, budget: int, spans: list[int], frames: tuple[int, ...]
) -> None:
    assert segment_spans(output, budget) == spans and sum(spans) == output - 1
    assert segment_frames(output, budget) == frames
    assert all(count <= budget and count % 4 == 1 for count in frames)


def test_joined_clips_have_no_step_at_the_seam() -> None:
    ramp = np.linspace(0, 80, 9)
    first = np.stack([np.full((4, 4, 3), 60 + value, np.uint8) for value in ramp])
    # The second clip re-renders the first's last frame 12 levels too bright, then goes on.
    second = np.stack([np.full((4, 4, 3), 152 + value, np.uint8) for value in ramp])
    frames = join_clips([first, second], [8, 8])
    assert len(frames) == 17 and np.array_equal(frames[8], first[-1])
    levels = [int(frame[0, 0, 0]) for frame in frames]
    steps = np.diff(levels)
    # 10 levels a frame within a clip; a plain cut would jump 22 at the seam, the fade
    # spreads the 12-level offset over 8 frames instead.
    assert steps.max() <= 12 and steps.min() >= 10, levels
    assert levels[-1] == 152 + 80  # the offset has faded out by the clip's end


def test_1080p_output_is_generated_at_the_models_budget() -> None:
    small = FLF2V.tuned({"max_area": 832 * 480, "steps": None})
    plan = plan_request(_request(width=1920, height=1080), small, negative_prompt="")
    assert (plan.width, plan.height) == (832, 464)
    assert (plan.output_width, plan.output_height, plan.steps) == (1920, 1080, 50)


def test_small_output_is_not_generated_larger() -> None:
    plan = plan_request(_request(width=64, height=64, seconds=2), FLF2V, negative_prompt="")
    assert (plan.width, plan.height, plan.num_frames) == (64, 64, 33)


def test_pipeline_arguments_name_the_second_guidance_for_two_experts() -> None:
    plan = plan_request(_request(), A14B, negative_prompt="")
    assert pipeline_arguments(plan, two_experts=True)["guidance_scale_2"] == 3.5
    assert "guidance_scale_2" not in pipeline_arguments(plan, two_experts=False)


class Blend:
    """A stand-in interpolator: a plain cross-fade, so the expected values are easy."""

    def __init__(self, first: np.ndarray, last: np.ndarray):
        self.first, self.last = first.astype(float), last.astype(float)

    def frame_at(self, t: float) -> np.ndarray:
        return np.round((1 - t) * self.first + t * self.last).astype(np.uint8)


def test_retimed_output_interpolates_between_neighbours() -> None:
    generated = [np.full((16, 32, 3), value, np.uint8) for value in (0, 40, 80, 120, 160)]
    layout = FLF2V.tuned({"frame_budget": 6, "fps": 4.0, "max_area": 32 * 16})
    plan = plan_request(_request(width=64, height=32, seconds=2), layout, negative_prompt="")
    assert (plan.num_frames, plan.output_frames) == (5, 9)
    frames = list(output_frames(generated, plan, Blend))
    assert [int(f[0, 0, 0]) for f in frames] == list(range(0, 161, 20))
    assert {f.shape for f in frames} == {(32, 64, 3)}
