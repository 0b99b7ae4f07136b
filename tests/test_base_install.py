"""README's run command installs only the base package: it must be enough for the default."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import subprocess, sys
    from PIL import Image, ImageDraw

    for name, shift in (("a", 0), ("b", 120)):
        image = Image.new("RGB", (640, 360), (40, 90, 160))
        ImageDraw.Draw(image).rectangle([100 + shift, 120, 220 + shift, 240], fill="yellow")
        image.save(f"{name}.png")
    subprocess.run([sys.executable, "-m", "wanserve.cli", "generate", "--first", "a.png",
                    "--last", "b.png", "--seconds", "2", "--size", "720P", "--quiet",
                    "-o", "out.mp4"], check=True)

    import wanserve.api.app, wanserve.engines.keyframe, wanserve.jobs.worker  # noqa
    heavy = [m for m in ("torch", "diffusers", "celery", "boto3") if m in sys.modules]
    assert not heavy, heavy
    print("base install ok")
    """
)


@pytest.mark.slow
def test_the_base_install_runs_the_default_engine(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    result = subprocess.run(
        [str(python), "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "base install ok" in result.stdout
    assert (tmp_path / "out.mp4").stat().st_size > 1000
