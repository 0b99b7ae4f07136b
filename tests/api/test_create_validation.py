"""Every field of API.md's create table, valid and invalid, through HTTP."""

from __future__ import annotations

import pytest

from helpers import seed_body

VALID = [
    ({"size": "720P"}, {"size": "720P"}),
    ({"size": "720p"}, {"size": "720P"}),
    ({"size": "1080P"}, {"size": "1080P"}),
    ({"size": "1280x720"}, {"size": "1280x720"}),
    ({"size": "720x1280"}, {"size": "720x1280"}),
    ({"size": "1920x1080"}, {"size": "1920x1080"}),
    ({"seconds": "2"}, {"seconds": "2"}),
    ({"seconds": 15}, {"seconds": "15"}),
    ({"seconds": "15"}, {"seconds": "15"}),
    ({"prompt": "x" * 5000}, {"prompt": "x" * 5000}),
    ({"negative_prompt": "y" * 500}, {}),
    ({"prompt_extend": False}, {}),
    ({"prompt_extend": "true"}, {}),
    ({"watermark": True}, {}),
    ({"seed": 0}, {"seed": 0}),
    ({"seed": 2147483647}, {"seed": 2147483647}),
    ({"unknown_field": {"nested": 1}}, {}),
]

INVALID = [
    ({"model": None}, "model", 400),
    ({"model": "no-such-model"}, "model", 404),
    ({"media": None}, "media", 400),
    ({"media": "not-a-list"}, "media", 400),
    ({"media": [{"type": "first_frame", "url": "https://example.com/a.png"}]}, "media", 400),
    ({"size": "480P"}, "size", 400),
    ({"size": "1280x721"}, "size", 400),
    ({"size": "4000x4000"}, "size", 400),
    ({"size": "1920x1920"}, "size", 400),
    ({"size": "abc"}, "size", 400),
    ({"seconds": "1"}, "seconds", 400),
    ({"seconds": "16"}, "seconds", 400),
    ({"seconds": 1}, "seconds", 400),
    ({"seconds": "5.5"}, "seconds", 400),
    ({"seconds": 5.5}, "seconds", 400),
    ({"seconds": True}, "seconds", 400),
    ({"seconds": "five"}, "seconds", 400),
    ({"prompt": "x" * 5001}, "prompt", 400),
    ({"prompt": 12}, "prompt", 400),
    ({"prompt": "a\x00b"}, "prompt", 400),
    ({"negative_prompt": "\x00"}, "negative_prompt", 400),
    ({"negative_prompt": "y" * 501}, "negative_prompt", 400),
    ({"prompt_extend": "maybe"}, "prompt_extend", 400),
    ({"watermark": "sometimes"}, "watermark", 400),
    ({"seed": -1}, "seed", 400),
    ({"seed": 2147483648}, "seed", 400),
    ({"seed": "abc"}, "seed", 400),
    ({"seed": True}, "seed", 400),
]


def _without_nones(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(("fields", "echoed"), VALID, ids=[str(v[0])[:40] for v in VALID])
def test_valid_fields_are_accepted_and_echoed(client, media_server, fields, echoed):
    response = client.post("/v1/videos", json=seed_body(media_server, **fields))
    assert response.status_code == 200, response.text
    video = response.json()
    for key, value in echoed.items():
        assert video[key] == value


@pytest.mark.parametrize(
    ("fields", "param", "status"), INVALID, ids=[f"{v[1]}:{str(v[0])[:30]}" for v in INVALID]
)
def test_invalid_fields_get_openai_error_naming_the_param(
    client, media_server, fields, param, status
):
    response = client.post("/v1/videos", json=_without_nones(seed_body(media_server, **fields)))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    if status == 404:
        assert error["code"] == "model_not_found"


MEDIA_INVALID = [
    ([{"type": "poster", "url": "{b}/wide-first.png"}], "media[0].type"),
    ([{"type": "first_frame"}], "media[0].url"),
    (
        [
            {"type": "first_frame", "url": "{b}/wide-first.png"},
            {"type": "first_frame", "url": "{b}/wide-last.png"},
            {"type": "last_frame", "url": "{b}/wide-last.png"},
        ],
        "media",
    ),
    ([{"type": "last_frame", "url": "{b}/wide-last.png"}], "media"),
    (
        [
            {"type": "first_frame", "url": "ftp://127.0.0.1/a.png"},
            {"type": "last_frame", "url": "{b}/wide-last.png"},
        ],
        "media[0].url",
    ),
    (
        [
            {"type": "first_frame", "url": "{b}/wide-first.png"},
            {"type": "last_frame", "url": "{b}/missing.png"},
        ],
        "media[1].url",
    ),
    (
        [
            {"type": "first_frame", "url": "{b}/notes.txt"},
            {"type": "last_frame", "url": "{b}/wide-last.png"},
        ],
        "media[0].url",
    ),
    (
        [
            {"type": "first_frame", "url": "{b}/wide-first.png"},
            {"type": "last_frame", "url": "{b}/wide-last.png"},
            {"type": "driving_audio", "url": "{b}/wide-first.png"},
        ],
        "media[2].url",
    ),
    (
        [
            {"type": "first_frame", "url": "data:image/png;base64,@@@"},
            {"type": "last_frame", "url": "{b}/wide-last.png"},
        ],
        "media[0].url",
    ),
]


@pytest.mark.parametrize(("media", "param"), MEDIA_INVALID, ids=[v[1] for v in MEDIA_INVALID])
def test_bad_media_is_a_400_naming_the_entry(client, media_server, media, param):
    media = [{k: v.replace("{b}", media_server) for k, v in m.items()} for m in media]
    response = client.post("/v1/videos", json=seed_body(media_server, media=media))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_refused_inputs_leave_no_job_behind(client, media_server):
    for fields, _, _ in INVALID:
        client.post("/v1/videos", json=_without_nones(seed_body(media_server, **fields)))
    listing = client.get("/v1/videos").json()
    assert listing["data"] == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"model=x", "text/plain"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
    ],
    ids=["broken-json", "json-array", "bad-utf8", "text-plain", "deep-nesting"],
)
def test_malformed_bodies_are_400(client, body, content_type):
    response = client.post("/v1/videos", content=body, headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert "error" in response.json()
