"""Text the database cannot store (NUL, lone surrogates) is a 400 naming the field, anywhere.

Every parameter of every operation in the app's own OpenAPI schema (path ids, queries,
headers), every field of both families' create bodies (JSON and the SDK's multipart form)
and of the remix body gets a NUL; JSON fields get a lone surrogate too. On PostgreSQL these
were 500s. Each answer must be a 400 in its family's error shape that names the field, and
nothing may be stored. Limits on list paging belong here as well: on either database an
offset past 64 bits was a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from netguard import loopback_fetcher
from pgtools import throwaway_schema
from wanserve.api.app import create_app
from wanserve.settings import Settings

URL = "https://media.example/frame.png"
V1_BODY: dict[str, Any] = {
    "model": "wan2.7-i2v",
    "prompt": "a cat",
    "negative_prompt": "blur",
    "size": "720P",
    "seconds": "2",
    "media": [
        {"type": "first_frame", "url": URL},
        {"type": "last_frame", "url": URL},
        {"type": "driving_audio", "url": URL},
    ],
}
DASHSCOPE_CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
DASHSCOPE_BODIES: list[dict[str, Any]] = [
    {
        "model": "wan2.7-i2v",
        "input": {
            "prompt": "a cat",
            "negative_prompt": "blur",
            "media": [{"type": "first_frame", "url": URL}, {"type": "last_frame", "url": URL}],
        },
        "parameters": {"resolution": "720P", "size": "1280*720", "duration": 2},
    },
    # The older single-URL fields, each in one of these bodies.
    {"model": "wan2.7-i2v", "input": {"img_url": URL, "last_frame_url": URL, "audio_url": URL}},
    {"model": "wan2.7-i2v", "input": {"first_frame_url": URL, "tail_frame": URL}},
    {"model": "wan2.7-i2v", "input": {"head_frame": URL, "last_frame_url": URL}},
]
ASYNC = {"X-DashScope-Async": "enable"}
BAD_TEXT = {"nul": "\x00", "lone-surrogate": "\ud800"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def db_client(request: pytest.FixtureRequest, settings: Settings) -> Iterator[TestClient]:
    """A client of an app on SQLite, or on a throw-away PostgreSQL schema; no quotas."""
    settings = settings.model_copy(update={"create_rate": 0, "max_unfinished_jobs": 0})
    if request.param == "sqlite":
        yield from _client(settings)
        return
    with throwaway_schema() as url:
        yield from _client(settings.model_copy(update={"database_url": url}))


def _client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, workers=0, fetcher=loopback_fetcher(settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
        # Refused means refused: no job, and no media kept for one.
        assert client.get("/v1/videos").json()["data"] == []
        files = settings.data_dir / "files"
        assert not files.exists() or not [p for p in files.rglob("*") if p.is_file()]


def refusal(response: Any, path: str, param: str) -> str | None:
    """Why `response` is not a 400 in `path`'s family shape naming `param`; None if it is."""
    if response.status_code != 400:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    body = response.json()
    if path.startswith("/api/"):
        if body.get("code") != "InvalidParameter" or f"'{param}'" not in body.get("message", ""):
            return f"not a DashScope error naming {param}: {body}"
    elif body.get("error", {}).get("param") != param:
        return f"not an OpenAI error naming {param}: {body}"
    return None


def _leaves(value: Any, where: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(param, key path) of every string in a JSON body, named as errors name them."""
    if isinstance(value, dict):
        for key, item in value.items():
            for param, keys in _leaves(item, f"{where}.{key}" if where else key):
                yield param, [key, *keys]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for param, keys in _leaves(item, f"{where}[{index}]"):
                yield param, [index, *keys]
    elif isinstance(value, str):
        yield where, []


def _with(body: Any, keys: list[Any], suffix: str) -> Any:
    copy = json.loads(json.dumps(body))
    target = copy
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] += suffix
    return copy


def _operations(client: TestClient) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    for path, item in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, operation in item.items():
            yield path, method.upper(), operation.get("parameters", [])
    # Not in the schema, same handler as GET.
    yield "/v1/videos/{video_id}/content", "HEAD", [{"name": "video_id", "in": "path"}]


def test_nul_in_any_path_query_or_header_parameter_is_a_400_naming_it(db_client):
    failures, sent = [], 0
    for template, method, parameters in _operations(db_client):
        for target in parameters:
            values = {p["name"]: "video_x" for p in parameters if p["in"] == "path"}
            query, headers = {}, dict(ASYNC)
            bad = "a\x00b"
            if target["in"] == "path":
                values[target["name"]] = bad
            elif target["in"] == "query":
                query[target["name"]] = bad
            else:
                headers[target["name"]] = bad
            path = template.format(**values).replace("\x00", "%00")
            body = {"json": {"prompt": "x"}} if method == "POST" else {}
            response = db_client.request(method, path, params=query, headers=headers, **body)
            sent += 1
            if method == "HEAD":  # no body to read the error from; the status must do
                problem = None if response.status_code == 400 else f"HTTP {response.status_code}"
            else:
                problem = refusal(response, template, target["name"])
            if problem:
                failures.append(f"{method} {template} {target['in']} {target['name']}: {problem}")
    assert sent >= 20
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", BAD_TEXT)
def test_bad_text_in_any_field_of_a_create_or_remix_body_is_a_400_naming_it(db_client, kind):
    targets = [("/v1/videos", V1_BODY, {}), ("/v1/videos/video_x/remix", {"prompt": "x"}, {})]
    targets += [(DASHSCOPE_CREATE, body, ASYNC) for body in DASHSCOPE_BODIES]
    failures, sent = [], 0
    for path, body, headers in targets:
        for param, keys in _leaves(body):
            # Serialised with ASCII escapes, so a lone surrogate travels as JSON's "\ud800".
            raw = json.dumps(_with(body, keys, BAD_TEXT[kind])).encode()
            headers = {**headers, "content-type": "application/json"}
            response = db_client.post(path, content=raw, headers=headers)
            sent += 1
            if problem := refusal(response, path, param):
                failures.append(f"{path} {param}: {problem}")
    assert sent >= 25
    assert not failures, "\n".join(failures)


def test_nul_in_any_field_of_the_sdk_multipart_form_is_a_400_naming_it(db_client):
    scalars = [(k, v) for k, v in V1_BODY.items() if k != "media"]
    media = [("media[][type]", m["type"]) for m in V1_BODY["media"]]
    media += [("media[][url]", m["url"]) for m in V1_BODY["media"]]
    fields = scalars + media
    # The SDK's form sends media[][type] before media[][url]: the i-th of each pair up.
    names = [k for k, _ in scalars] + [f"media[{i}].type" for i in range(3)]
    names += [f"media[{i}].url" for i in range(3)]
    failures = []
    for index, param in enumerate(names):
        form = [(k, (None, v + "\x00" if i == index else v)) for i, (k, v) in enumerate(fields)]
        response = db_client.post("/v1/videos", files=form)
        if problem := refusal(response, "/v1/videos", param):
            failures.append(f"{param}: {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/v1/tasks?page_no=99999999999999999999", "page_no"),
        ("/api/v1/tasks?page_no=1000001", "page_no"),
        ("/api/v1/tasks?page_no=2&page_size=100000000000", "page_size"),
        ("/v1/videos?limit=99999999999999999999", "limit"),
    ],
)
def test_paging_past_its_bounds_is_a_400_in_the_family_shape(db_client, path, param):
    assert refusal(db_client.get(path), path, param) is None


def test_the_last_allowed_page_is_an_empty_page(db_client):
    answer = db_client.get("/api/v1/tasks", params={"page_no": 1_000_000, "page_size": 100})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["data"], answer.json()["page_no"]) == ([], 1_000_000)
