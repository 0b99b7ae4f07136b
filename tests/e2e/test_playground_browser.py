"""The playground page in a real headless Chromium against a real `wanserve serve`."""

from __future__ import annotations

import json
import sqlite3

import av
import httpx
import pytest
from e2e_helpers import KEY_A, KEY_B
from playground_page import NARROW, RECORD_PROGRESS, WIDE, Recorded

from helpers import png_bytes, scene, seed_body

pytestmark = pytest.mark.slow
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
TIMES = "\N{MULTIPLICATION SIGN}"  # the page writes sizes as "640 TIMES 360 px"


def same_origin(recorded: Recorded, origin: str) -> list[str]:
    """URLs the page requested outside its own origin (blob: and data: are local)."""
    local = (origin + "/", f"blob:{origin}/", "data:")
    return [url for url in recorded.urls() if not url.startswith(local)]


def stored_job(server, video_id: str) -> tuple[dict, list[dict]]:
    """The spec and media of a job as the server stored them."""
    with sqlite3.connect(server.data_dir / "wanserve.db") as db:
        row = db.execute("SELECT spec, media FROM jobs WHERE id = ?", (video_id,)).fetchone()
    spec, media = row
    return json.loads(spec), json.loads(media)


def create(url: str, media_server: str, key: str = KEY_A, **fields: object) -> dict:
    """A job made through the API, outside the page."""
    response = httpx.post(
        f"{url}/v1/videos",
        headers={"Authorization": f"Bearer {key}"},
        json=seed_body(media_server, **fields),
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_make_watch_play_download_remix_and_reopen(server_factory, playground, media_dir, tmp_path):
    server = server_factory(workers=1)
    page = playground.page
    playground.open(server.url, KEY_A)

    # 1. Two frames dropped, the audio chosen: previews with their measurements.
    playground.drop("first_frame", media_dir / "wide-first.png", "image/png")
    playground.drop("last_frame", media_dir / "wide-last.png", "image/png")
    page.set_input_files("#driving_audio-file", str(media_dir / "audio.wav"))
    page.wait_for_function("() => document.querySelector('#last_frame [data-thumb]').naturalWidth")
    page.wait_for_function("() => document.querySelector('#driving_audio-info').textContent")
    assert f"640 {TIMES} 360 px" in playground.text("#first_frame-info")
    assert f"640 {TIMES} 360 px" in playground.text("#last_frame-info")
    assert "3.0 s" in playground.text("#driving_audio-info")
    assert page.eval_on_selector("#driving_audio [data-player]", "a => Math.round(a.duration)") == 3

    # 2. Every field of the contract, then Generate.
    page.fill("#prompt", "The square glides to the right.")
    page.fill("#negative_prompt", "blur")
    page.select_option("#size", "720P")
    page.fill("#seconds", "2")
    page.fill("#seed", "1234")
    page.check("#watermark")
    page.uncheck("#prompt_extend")
    assert page.input_value("#model") == "wan2.7-i2v"
    playground.screenshot("form-wide")
    page.set_viewport_size(NARROW)
    playground.screenshot("form-narrow")
    page.set_viewport_size(WIDE)
    page.evaluate(RECORD_PROGRESS)
    page.click("#submit")
    playground.wait_status("completed")

    # 3. Progress went up live to 100; the video plays inline at its length.
    seen = page.evaluate("window.progressValues()")
    assert seen == sorted(seen) and seen[-1] == 100
    assert any(0 < value < 100 for value in seen), seen
    assert playground.text("#job-percent") == "100%"
    transport = page.get_attribute("#job-view", "data-transport")
    assert transport in ("stream", "polling")
    print(f"playground followed the job by {transport}")
    duration = page.wait_for_function(
        "() => { const v = document.querySelector('#job-video');"
        " return v && v.readyState >= 1 ? v.duration : null; }"
    ).json_value()
    assert abs(duration - 2.0) < 0.1
    assert page.eval_on_selector("#job-video", "v => [v.videoWidth, v.videoHeight]") == [1280, 720]
    video_id = page.inner_text("#job-id")
    video = httpx.get(f"{server.url}/v1/videos/{video_id}", headers=AUTH_A).json()
    assert (video["seed"], video["size"], video["seconds"]) == (1234, "720P", "2")
    # Chromium does not show multipart bodies with files; the stored job shows what arrived.
    spec, media = stored_job(server, video_id)
    assert spec["negative_prompt"] == "blur"
    assert (spec["watermark"], spec["prompt_extend"]) == (True, False)
    assert sorted(m["type"] for m in media) == ["driving_audio", "first_frame", "last_frame"]

    # 4. Downloads: the MP4 (with the audio track) and the thumbnail.
    page.wait_for_selector("#download-spritesheet")
    with page.expect_download() as download:
        page.click("#download-video")
    saved = tmp_path / "downloaded.mp4"
    download.value.save_as(saved)
    with av.open(str(saved)) as container:
        assert abs(container.duration / av.time_base - 2.0) < 0.1
        assert container.streams.audio
    with page.expect_download() as download:
        page.click("#download-thumbnail")
    thumbnail = tmp_path / "thumbnail.webp"
    download.value.save_as(thumbnail)
    assert thumbnail.read_bytes()[8:12] == b"WEBP"
    playground.screenshot("finished-wide")
    page.set_viewport_size(NARROW)
    playground.screenshot("finished-narrow")
    page.set_viewport_size(WIDE)

    # 5. Remix: a new job with a new prompt, opened when made.
    page.click("#job-remix")
    page.fill("#remix-prompt", "The square glides, remixed.")
    page.click("#remix-submit")
    page.wait_for_function(
        "(id) => document.querySelector('#job-id')?.textContent !== id", arg=video_id
    )
    remix_id = page.inner_text("#job-id")
    playground.wait_status("completed")
    assert video_id in playground.text("#job-view")  # "Remix of <source>"

    # 6. History: newest first, with thumbnails; clicking the older one opens it.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.history-item img')]"
        ".filter(i => i.naturalWidth).length === 2"
    )
    ids = page.eval_on_selector_all(".history-item", "items => items.map(i => i.dataset.id)")
    assert ids == [remix_id, video_id]
    page.click(f".history-item[data-id='{video_id}']")
    assert page.inner_text("#job-id") == video_id
    page.wait_for_function("() => document.querySelector('#job-video')?.readyState >= 1")
    assert playground.unlabelled() == []
    assert same_origin(playground, server.url) == []


def test_cancel_a_running_job_then_delete_it(server_factory, playground, media_dir):
    server = server_factory(workers=1)
    page = playground.page
    # The event stream cut off: the page must carry on by polling.
    page.route("**/v1/videos/*/events", lambda route: route.abort())
    playground.open(server.url, KEY_A)
    page.set_input_files("#first_frame-file", str(media_dir / "wide-first.png"))
    page.set_input_files("#last_frame-file", str(media_dir / "wide-last.png"))
    page.select_option("#size", "1080P")
    page.fill("#seconds", "15")
    page.click("#submit")
    page.wait_for_function(
        "() => document.querySelector('#job-status')?.dataset.status === 'in_progress'"
        " && document.querySelector('#job-progress').value > 0", timeout=60_000
    )
    assert page.get_attribute("#job-view", "data-transport") == "polling"
    video_id = page.inner_text("#job-id")
    page.click("#job-cancel")
    playground.wait_status("failed")
    assert "cancelled" in playground.text("#job-status")
    assert page.is_hidden("#job-cancel")
    video = httpx.get(f"{server.url}/v1/videos/{video_id}", headers=AUTH_A).json()
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled"
    assert video["progress"] < 100

    page.click("#job-delete")
    assert "again" in page.inner_text("#job-delete")
    page.click("#job-delete")
    page.wait_for_selector("#job-view", state="hidden")
    page.wait_for_function(
        "(id) => !document.querySelector(`.history-item[data-id='${id}']`)", arg=video_id
    )
    assert httpx.get(f"{server.url}/v1/videos/{video_id}", headers=AUTH_A).status_code == 404
    assert same_origin(playground, server.url) == []


def test_errors_show_beside_their_fields(
    server_factory, playground, media_dir, media_server, tmp_path
):
    # A small audio cap: the page must check against this server's number, not a copy.
    server = server_factory(workers=0, WANSERVE_MAX_AUDIO_BYTES="50000")
    page = playground.page
    playground.open(server.url, KEY_A)
    assert "up to 49 KB" in playground.text("#limits-note")
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(scene(200, 120, 0)))

    # 1. Refused in the page, beside each field, before anything is sent.
    playground.drop("first_frame", small, "image/png")
    page.set_input_files("#driving_audio-file", str(media_dir / "audio.wav"))
    page.fill("#seconds", "20")
    page.select_option("#size", "custom")
    page.fill("#width", "1001")
    page.click("#submit")
    page.wait_for_function("() => document.querySelector('#seconds-error').textContent")
    assert f"200{TIMES}120" in playground.text("#first_frame-error")
    assert "240" in playground.text("#first_frame-error")
    assert "at most 49 KB" in playground.text("#driving_audio-error")
    assert "from 2 to 15" in playground.text("#seconds-error")
    assert "last frame" in playground.text("#last_frame-error")
    assert "multiple of 8" in playground.text("#size-error")
    assert page.get_attribute("#seconds", "aria-invalid") == "true"
    assert playground.posts("/v1/videos") == []
    playground.screenshot("errors-wide")

    # 2. Refused by the server: its `param` (media[1].url) puts it beside the last frame.
    page.click("#first_frame [data-clear]")
    page.click("#driving_audio [data-clear]")
    page.fill("#first_frame-url", f"{media_server}/wide-first.png")
    page.fill("#last_frame-url", f"{media_server}/notes.txt")
    page.fill("#seconds", "2")
    page.fill("#width", "1280")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#submit")
    assert answer.value.status == 400
    assert answer.value.json()["error"]["param"] == "media[1].url"
    page.wait_for_function("() => document.querySelector('#last_frame-error').textContent")
    assert "not a JPEG" in playground.text("#last_frame-error")
    assert playground.text("#first_frame-error") == ""
    assert playground.text("#general-error") == ""
    assert page.get_attribute("#last_frame-url", "aria-invalid") == "true"

    # 3. A wrong key: beside the key field.
    page.fill("#apikey", "wrong-key")
    page.press("#apikey", "Enter")
    page.wait_for_function("() => document.querySelector('#apikey-error').textContent")
    assert "API key" in playground.text("#apikey-error")
    # The page never fetched the typed URLs itself: only the server did.
    assert same_origin(playground, server.url) == []


def test_history_pages_newest_first_and_remembers_the_key(server_factory, playground, media_server):
    server = server_factory(workers=0)
    made = [create(server.url, media_server, prompt=f"job {n:02}") for n in range(9)]
    create(server.url, media_server, key=KEY_B, prompt="another key's job")
    page = playground.page
    playground.open(server.url, KEY_A)

    def prompts() -> list[str]:
        return page.eval_on_selector_all(
            ".history-prompt", "items => items.map(i => i.textContent)"
        )

    page.wait_for_function("() => document.querySelectorAll('.history-item').length === 8")
    assert prompts() == [f"job {n:02}" for n in range(8, 0, -1)]
    page.click("#history-older")
    page.wait_for_function("() => document.querySelectorAll('.history-item').length === 1")
    assert prompts() == ["job 00"]
    assert page.is_disabled("#history-older") and "Page 2" in playground.text("#history-page")
    page.click("#history-newer")
    page.wait_for_function("() => document.querySelectorAll('.history-item').length === 8")
    assert page.is_disabled("#history-newer")

    target = made[5]["id"]
    page.focus(f".history-item[data-id='{target}']")  # by keyboard
    page.keyboard.press("Enter")
    page.wait_for_selector("#job-id")
    assert page.inner_text("#job-id") == target
    assert page.get_attribute(f".history-item[data-id='{target}']", "aria-current") == "true"
    assert "queued" in playground.text("#job-status") and page.is_visible("#job-cancel")

    # The key stays in this browser, and the address reopens the video.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.input_value("#apikey") == KEY_A
    assert page.inner_text("#job-id") == target
    assert "another key's job" not in prompts()


def test_event_stream_drives_progress_and_resumes(server_factory, playground, media_server):
    """The stream client against the contract's event shape (API.md: `data:` is the video)."""
    server = server_factory(workers=0)
    video = create(server.url, media_server, prompt="streamed")
    page = playground.page

    def event(event_id: int, **changes: object) -> str:
        return f"id: {event_id}\ndata: {json.dumps({**video, **changes})}\n\n"

    multiline = json.dumps({**video, "status": "in_progress", "progress": 80}, indent=1)
    first = (
        ": connected\n\n"
        + event(1, status="queued", progress=0)
        + event(2, status="in_progress", progress=40).replace("\n", "\r\n")
        + ": heartbeat\n\n"
        + "id: 3\n" + "".join(f"data: {line}\n" for line in multiline.splitlines()) + "\n"
    )  # ...and the stream ends before the terminal event: the page must resume
    failed = {"code": "engine_error", "message": "canned failure"}
    second = event(4, status="failed", progress=80, error=failed)
    streams: list[dict[str, str]] = []

    def answer(route) -> None:
        streams.append(route.request.headers)
        body = first if len(streams) == 1 else second
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route(f"**/v1/videos/{video['id']}/events", answer)
    playground.open(server.url, KEY_A)
    page.evaluate(RECORD_PROGRESS)
    page.click(f".history-item[data-id='{video['id']}']")
    playground.wait_status("failed")
    seen = page.evaluate("window.progressValues()")
    assert seen == sorted(seen) and sorted(set(seen)) == [0, 40, 80]
    assert page.get_attribute("#job-view", "data-transport") == "stream"
    assert "engine_error: canned failure" in playground.text("#job-error")
    assert len(streams) == 2 and streams[1].get("last-event-id") == "3"
    assert streams[0]["authorization"] == f"Bearer {KEY_A}"
    # Everything came from the stream: no polling of the video itself.
    assert f"{server.url}/v1/videos/{video['id']}" not in playground.urls()


def test_the_real_event_stream_drives_the_page_to_completed(
    server_factory, playground, media_server
):
    """The page against this server's own `GET /v1/videos/{id}/events`, the worker in
    another process: progress climbs, the video completes, nothing is polled."""
    server = server_factory(workers=1, WANSERVE_STREAM_HEARTBEAT="1")
    page = playground.page
    playground.open(server.url, KEY_A)
    page.evaluate(RECORD_PROGRESS)
    video = create(server.url, media_server, prompt="streamed for real", seconds="4")
    page.reload()
    page.evaluate(RECORD_PROGRESS)
    page.click(f".history-item[data-id='{video['id']}']")
    playground.wait_status("completed")
    seen = page.evaluate("window.progressValues()")
    assert seen == sorted(seen) and seen[-1] == 100 and len(set(seen)) >= 3
    assert page.get_attribute("#job-view", "data-transport") == "stream"
    assert f"{server.url}/v1/videos/{video['id']}" not in playground.urls()
    assert playground.errors == []
