"""The playground page in a real headless Chromium: upload two frames, watch, play."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from e2e_helpers import KEY_A

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield browser.new_page()
        browser.close()


def test_playground_makes_and_plays_a_video(server_factory, page, media_dir, tmp_path):
    server = server_factory(workers=1)
    page.goto(server.url + "/")
    assert "wanserve" in page.title()
    page.fill("#apikey", KEY_A)
    page.click("#refresh")
    page.set_input_files("#first", str(media_dir / "wide-first.png"))
    page.set_input_files("#last", str(media_dir / "wide-last.png"))
    page.set_input_files("#audio", str(media_dir / "audio.wav"))
    page.fill("#seconds", "2")
    page.select_option("#size", "720P")
    page.click("#submit")
    player = page.wait_for_selector(".job video", timeout=120_000)
    duration = page.wait_for_function(
        "() => { const v = document.querySelector('.job video');"
        " return v && v.readyState >= 1 ? v.duration : null; }",
        timeout=30_000,
    ).json_value()
    assert abs(duration - 2.0) < 0.1
    assert "completed 100%" in page.inner_text(".job .status")
    assert page.inner_text("#error") == ""
    assert player.evaluate("v => [v.videoWidth, v.videoHeight]") == [1280, 720]
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)


def test_playground_shows_api_errors(server_factory, page, media_dir):
    server = server_factory(workers=0)
    page.goto(server.url + "/")
    page.fill("#apikey", "wrong-key")
    page.set_input_files("#first", str(media_dir / "wide-first.png"))
    page.set_input_files("#last", str(media_dir / "wide-last.png"))
    page.click("#submit")
    page.wait_for_function("() => document.querySelector('#error').textContent.length > 0")
    assert "API key" in page.inner_text("#error")
