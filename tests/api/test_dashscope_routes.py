"""The DashScope-compatible `/api/v1` routes through HTTP: create, fetch, cancel, list."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from helpers import seed_body
from wanserve.api.app import create_app
from wanserve.jobs.model import JobStatus

SYNTHESIS = "/api/v1/services/aigc/video-generation/video-synthesis"
KEYFRAMES = "/api/v1/services/aigc/image2video/video-synthesis"
ASYNC = {"X-DashScope-Async": "enable"}
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"}


def ds_body(base: str, *, audio: bool = False, **parameters: object) -> dict[str, object]:
    """A wan2.7-i2v video-synthesis body with media on the local media server."""
    media = [
        {"type": "first_frame", "url": f"{base}/wide-first.png"},
        {"type": "last_frame", "url": f"{base}/wide-last.png"},
    ]
    if audio:
        media.append({"type": "driving_audio", "url": f"{base}/audio.wav"})
    return {
        "model": "wan2.7-i2v",
        "input": {"prompt": "A cat walks down the hallway.", "media": media},
        "parameters": {"resolution": "720P", "duration": 2, **parameters},
    }


def create(client: TestClient, body: dict[str, object], path: str = SYNTHESIS, **kw) -> str:
    answer = client.post(path, json=body, headers={**ASYNC, **kw.pop("headers", {})}, **kw)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["output"]["task_id"])


def wait_task(client: TestClient, task_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/api/v1/tasks/{task_id}").json()
        if answer["output"]["task_status"] in FINAL:
            return answer
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} stuck: {answer}")


def assert_dashscope_error(answer, status: int, code: str, *words: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"request_id", "code", "message"}, body
    assert body["code"] == code, body
    for word in words:
        assert word in body["message"], body


def store_of(client: TestClient):
    return client.app.state.services.store  # type: ignore[attr-defined]


def test_create_answers_a_pending_task_visible_on_both_apis(client, media_server):
    answer = client.post(SYNTHESIS, json=ds_body(media_server), headers=ASYNC)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"request_id", "output"}
    assert body["output"]["task_status"] == "PENDING"
    task_id = body["output"]["task_id"]

    task = client.get(f"/api/v1/tasks/{task_id}").json()
    assert task["output"]["task_status"] == "PENDING"
    assert STAMP.match(task["output"]["submit_time"])
    assert "end_time" not in task["output"] and "usage" not in task
    video = client.get(f"/v1/videos/{task_id}").json()
    assert video["status"] == "queued" and video["size"] == "720P" and video["seconds"] == "2"
    assert store_of(client).get(task_id).source_api == "dashscope"


def test_a_v1_job_reads_as_a_task(client, media_server):
    video = client.post("/v1/videos", json=seed_body(media_server)).json()
    task = client.get(f"/api/v1/tasks/{video['id']}").json()
    assert task["output"]["task_id"] == video["id"]
    assert task["output"]["task_status"] == "PENDING"


@pytest.mark.parametrize(
    ("path", "given", "expected"),
    [
        (
            KEYFRAMES,
            {"first_frame_url": "wide-first.png", "last_frame_url": "wide-last.png"},
            ["first_frame", "last_frame"],
        ),
        (
            SYNTHESIS,
            {"img_url": "wide-first.png", "last_frame_url": "wide-last.png"},
            ["first_frame", "last_frame"],
        ),
        (
            KEYFRAMES,
            {
                "head_frame": "wide-first.png",
                "tail_frame": "wide-last.png",
                "audio_url": "audio.wav",
            },
            ["first_frame", "last_frame", "driving_audio"],
        ),
    ],
)
def test_older_single_url_input_fields(client, media_server, path, given, expected):
    fields = {name: f"{media_server}/{file}" for name, file in given.items()}
    body = {"model": "wan2.7-i2v", "input": {"prompt": "x", **fields}}
    task_id = create(client, body, path)
    job = store_of(client).get(task_id)
    assert [m.type for m in job.media] == expected
    assert job.spec.size == "1080P" and job.spec.seconds == 5 and job.spec.prompt_extend


def test_parameters_reach_the_job(client, media_server):
    body = ds_body(media_server, size="640*480", seed=7, watermark=True, prompt_extend=False)
    body["input"]["negative_prompt"] = "blur"  # type: ignore[index]
    job = store_of(client).get(create(client, body))
    assert (job.spec.size, job.spec.width, job.spec.height) == ("640x480", 640, 480)
    assert (job.spec.seed, job.spec.watermark, job.spec.prompt_extend) == (7, True, False)
    assert job.spec.negative_prompt == "blur"


def test_the_1x_extend_prompt_input_field_is_honoured(client, media_server):
    body = ds_body(media_server)
    body["input"]["extend_prompt"] = False  # type: ignore[index]
    assert store_of(client).get(create(client, body)).spec.prompt_extend is False


@pytest.mark.parametrize("headers", [{}, {"X-DashScope-Async": "disable"}])
def test_synchronous_calls_are_refused(client, media_server, headers):
    answer = client.post(SYNTHESIS, json=ds_body(media_server), headers=headers)
    assert answer.status_code == 403
    body = answer.json()
    assert set(body) == {"request_id", "code", "message"}
    assert body["message"] == "current user api does not support synchronous calls"
    assert store_of(client).list("public")[0] == []


def test_synchronous_refusal_has_dashscope_code(client, media_server):
    answer = client.post(SYNTHESIS, json=ds_body(media_server))
    assert answer.json()["code"] == "AccessDenied"


def _without(body: dict, *path: str) -> dict:
    node = body
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return body


INVALID = [
    ("model", lambda b: _without(b, "model"), "model"),
    ("input", lambda b: _without(b, "input"), "input"),
    ("media type", lambda b: b["input"]["media"][0].update(type="reference_image"), "media[0]"),
    ("resolution", lambda b: b["parameters"].update(resolution="4K"), "parameters.resolution"),
    ("size", lambda b: b["parameters"].update(size="1000*1001"), "parameters.size"),
    ("size form", lambda b: b["parameters"].update(size="big"), "parameters.size"),
    ("duration", lambda b: b["parameters"].update(duration=1), "parameters.duration"),
    ("duration bool", lambda b: b["parameters"].update(duration=True), "parameters.duration"),
    ("seed", lambda b: b["parameters"].update(seed=-1), "parameters.seed"),
    ("prompt", lambda b: b["input"].update(prompt="x" * 5001), "input.prompt"),
    ("last frame", lambda b: b["input"]["media"].pop(1), "last_frame"),
    ("duplicate", lambda b: b["input"].update(img_url="http://x/y.png"), "input.img_url"),
    (
        "forbidden url",
        lambda b: b["input"]["media"][0].update(url="http://10.0.0.1/a.png"),
        "input.media[0].url",
    ),
]


@pytest.mark.parametrize(("case", "spoil", "named"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_bodies_are_400_in_dashscope_shape(client, media_server, case, spoil, named):
    body = ds_body(media_server)
    spoil(body)
    answer = client.post(SYNTHESIS, json=body, headers=ASYNC)
    assert_dashscope_error(answer, 400, "InvalidParameter", named)


def test_not_json_and_unknown_model(client, media_server):
    answer = client.post(SYNTHESIS, content=b"{nope", headers=ASYNC)
    assert_dashscope_error(answer, 400, "InvalidParameter", "JSON")
    body = ds_body(media_server)
    body["model"] = "wan9-unknown"
    answer = client.post(SYNTHESIS, json=body, headers=ASYNC)
    assert_dashscope_error(answer, 404, "NotFound", "wan9-unknown")


def test_a_job_completes_into_a_succeeded_task(client, worker, media_server):
    task_id = create(client, ds_body(media_server, seed=3))
    task = wait_task(client, task_id)
    output = task["output"]
    assert output["task_status"] == "SUCCEEDED", task
    for key in ("submit_time", "scheduled_time", "end_time"):
        assert STAMP.match(output[key]), output
    assert output["submit_time"] <= output["scheduled_time"] <= output["end_time"]
    assert output["orig_prompt"] == output["actual_prompt"] == "A cat walks down the hallway."
    assert output["video_url"].endswith(f"/v1/videos/{task_id}/content")
    assert "code" not in output
    assert task["usage"] == {
        "duration": 2,
        "video_duration": 2,
        "output_video_duration": 2,
        "video_count": 1,
        "video_ratio": "1280*720",
        "SR": 720,
    }
    content = client.get(output["video_url"])
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    assert client.get(f"/v1/videos/{task_id}").json()["status"] == "completed"


def test_failed_job_carries_code_and_message(client, media_server):
    task_id = create(client, ds_body(media_server))
    store_of(client).transition(
        task_id, JobStatus.FAILED, error_code="upstream_error", error_message="provider said no"
    )
    output = client.get(f"/api/v1/tasks/{task_id}").json()["output"]
    assert output["task_status"] == "FAILED"
    assert (output["code"], output["message"]) == ("upstream_error", "provider said no")


def test_cancel_reads_canceled_on_both_apis(client, media_server):
    task_id = create(client, ds_body(media_server))
    answer = client.post(f"/api/v1/tasks/{task_id}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"]["task_status"] == "CANCELED"
    assert STAMP.match(answer.json()["output"]["end_time"])
    assert client.get(f"/api/v1/tasks/{task_id}").json()["output"]["task_status"] == "CANCELED"
    video = client.get(f"/v1/videos/{task_id}").json()
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled"

    again = client.post(f"/api/v1/tasks/{task_id}/cancel")
    assert_dashscope_error(again, 400, "InvalidParameter", "already finished", "CANCELED")


def test_cancel_a_running_job(client, media_server):
    task_id = create(client, ds_body(media_server))
    store_of(client).transition(task_id, JobStatus.IN_PROGRESS, started_at=time.time())
    assert client.get(f"/api/v1/tasks/{task_id}").json()["output"]["task_status"] == "RUNNING"
    answer = client.post(f"/api/v1/tasks/{task_id}/cancel")
    assert answer.json()["output"]["task_status"] == "CANCELED"


def test_a_v1_cancel_reads_canceled(client, media_server):
    video = client.post("/v1/videos", json=seed_body(media_server)).json()
    client.post(f"/v1/videos/{video['id']}/cancel")
    output = client.get(f"/api/v1/tasks/{video['id']}").json()["output"]
    assert output["task_status"] == "CANCELED"


def test_unknown_task_is_404_in_dashscope_shape(client):
    assert_dashscope_error(client.get("/api/v1/tasks/video_nope"), 404, "NotFound", "video_nope")
    answer = client.post("/api/v1/tasks/video_nope/cancel")
    assert_dashscope_error(answer, 404, "NotFound", "video_nope")


def test_list_pages_and_filters(client, media_server):
    ids = [create(client, ds_body(media_server)) for _ in range(3)]
    client.post(f"/api/v1/tasks/{ids[0]}/cancel")

    page = client.get("/api/v1/tasks", params={"page_no": 1, "page_size": 2}).json()
    assert (page["total"], page["total_page"], page["page_no"], page["page_size"]) == (3, 2, 1, 2)
    assert [t["task_id"] for t in page["data"]] == [ids[2], ids[1]]
    assert page["tasks"] == page["data"]
    entry = page["data"][0]
    assert entry["status"] == entry["task_status"] == "PENDING"
    assert entry["model_name"] == "wan2.7-i2v" and STAMP.match(entry["submit_time"])
    second = client.get("/api/v1/tasks", params={"page_no": 2, "page_size": 2}).json()
    assert [t["task_id"] for t in second["data"]] == [ids[0]]

    def listed(**params: object) -> list[str]:
        return [t["task_id"] for t in client.get("/api/v1/tasks", params=params).json()["data"]]

    assert listed(status="CANCELED") == [ids[0]]
    assert listed(status="pending") == [ids[2], ids[1]]
    assert listed(model_name="other-model") == []
    assert len(listed(start_time="20000101000000", end_time="2999-01-01 00:00:00")) == 3
    assert listed(start_time="29990101000000") == []
    default = client.get("/api/v1/tasks").json()
    assert (default["page_no"], default["page_size"], default["total"]) == (1, 10, 3)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "DONE"}, "status"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"page_size": 0}, "page_size"),
        ({"page_no": 0}, "page_no"),
    ],
)
def test_list_rejects_bad_parameters(client, params, named):
    assert_dashscope_error(
        client.get("/api/v1/tasks", params=params), 400, "InvalidParameter", named
    )


@pytest.fixture
def keyed_client(settings):
    settings.api_keys = ["key-a", "key-b"]
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


def test_keys_and_owner_isolation(keyed_client, media_server):
    key_a = {"Authorization": "Bearer key-a"}
    key_b = {"Authorization": "Bearer key-b"}
    answer = keyed_client.post(SYNTHESIS, json=ds_body(media_server), headers=ASYNC)
    assert_dashscope_error(answer, 401, "InvalidApiKey")
    task_id = create(keyed_client, ds_body(media_server), headers=key_a)

    assert keyed_client.get(f"/api/v1/tasks/{task_id}", headers=key_a).status_code == 200
    assert keyed_client.get(f"/v1/videos/{task_id}", headers=key_a).status_code == 200
    other = keyed_client.get(f"/api/v1/tasks/{task_id}", headers=key_b)
    assert_dashscope_error(other, 404, "NotFound")
    cancel = keyed_client.post(f"/api/v1/tasks/{task_id}/cancel", headers=key_b)
    assert_dashscope_error(cancel, 404, "NotFound")
    assert keyed_client.get("/api/v1/tasks", headers=key_b).json()["total"] == 0
    assert keyed_client.get("/api/v1/tasks", headers=key_a).json()["total"] == 1
    assert_dashscope_error(keyed_client.get("/api/v1/tasks"), 401, "InvalidApiKey")


def test_create_quota_applies_and_refused_sync_calls_cost_nothing(settings, media_server):
    settings.create_burst, settings.create_rate = 1, 0.001
    with TestClient(create_app(settings, workers=0)) as quota_client:
        for _ in range(3):
            refused = quota_client.post(SYNTHESIS, json=ds_body(media_server))
            assert refused.status_code == 403
        create(quota_client, ds_body(media_server))
        answer = quota_client.post(KEYFRAMES, json=ds_body(media_server), headers=ASYNC)
        assert_dashscope_error(answer, 429, "Throttling")
        assert int(answer.headers["Retry-After"]) >= 1


def test_task_times_are_in_beijing_time():
    from wanserve.api.routes.dashscope import dashscope_time

    assert dashscope_time(0.25) == "1970-01-01 08:00:00.250"
    assert dashscope_time(None) is None
