"""The `wanserve` command line."""

from __future__ import annotations

import subprocess
import sys

import av
import pytest


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wanserve.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.slow
def test_generate_makes_one_video_without_a_server(media_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    result = run_cli(
        "generate",
        "--first",
        str(media_dir / "tall-first.png"),
        "--last",
        str(media_dir / "tall-last.png"),
        "--audio",
        str(media_dir / "audio.wav"),
        "--seconds",
        "2",
        "--size",
        "720P",
        "--seed",
        "3",
        "--data-dir",
        str(tmp_path / "d"),
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "720x1280" in result.stdout and "seed 3" in result.stdout
    assert "generating" in result.stderr  # the progress bar
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.width == 720
        assert container.streams.audio


def test_generate_refuses_bad_input_with_a_message(media_dir, tmp_path):
    result = run_cli(
        "generate",
        "--first",
        str(media_dir / "notes.txt"),
        "--last",
        str(media_dir / "wide-last.png"),
        "-o",
        str(tmp_path / "x.mp4"),
    )
    assert result.returncode == 2
    assert "wanserve:" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve", "worker", "generate"):
        assert command in result.stdout
