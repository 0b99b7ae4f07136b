"""What gateways send: OpenAI's JSON `input_reference` object as the first frame, and
`media` as one JSON-encoded multipart field (a LiteLLM proxy drops repeated parts)."""

from __future__ import annotations

import json

import pytest

from helpers import clip_bytes, pan_frames


def _json_body(base: str, **fields: object) -> dict[str, object]:
    return {
        "model": "wan2.7-i2v",
        "seconds": "2",
        "size": "720P",
        "media": [{"type": "last_frame", "url": f"{base}/wide-last.png"}],
        **fields,
    }


@pytest.mark.parametrize(
    "reference",
    [
        {"image_url": "{b}/tall-first.png"},
        '{"image_url": "{b}/tall-first.png"}',  # the object passed on as JSON text
        "{b}/tall-first.png",  # a bare URL
    ],
    ids=["object", "json-text", "url"],
)
def test_input_reference_object_is_the_first_frame(client, media_server, reference):
    if isinstance(reference, dict):
        reference = {k: v.replace("{b}", media_server) for k, v in reference.items()}
    else:
        reference = reference.replace("{b}", media_server)
    response = client.post("/v1/videos", json=_json_body(media_server, input_reference=reference))
    assert response.status_code == 200, response.text


def test_input_reference_errors_name_it(client, media_server):
    bad = {"image_url": f"{media_server}/notes.txt"}
    response = client.post("/v1/videos", json=_json_body(media_server, input_reference=bad))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_reference.image_url"
    response = client.post(
        "/v1/videos", json=_json_body(media_server, input_reference={"file_id": "file_1"})
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_reference.image_url"
    response = client.post("/v1/videos", json=_json_body(media_server, input_reference="{oops"))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_reference"
    # With a first_frame in media as well, the request has two first frames.
    first = {"image_url": f"{media_server}/wide-first.png"}
    body = _json_body(media_server, input_reference=first)
    body["media"] = [
        {"type": "first_frame", "url": f"{media_server}/wide-first.png"},
        {"type": "last_frame", "url": f"{media_server}/wide-last.png"},
    ]
    response = client.post("/v1/videos", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "media"


def test_input_reference_in_form_brackets(client, media_server):
    fields = [
        ("model", "wan2.7-i2v"),
        ("seconds", "2"),
        ("input_reference[image_url]", f"{media_server}/wide-first.png"),
        ("media[][type]", "last_frame"),
        ("media[][url]", f"{media_server}/wide-last.png"),
    ]
    response = client.post("/v1/videos", files=[(k, (None, v)) for k, v in fields])
    assert response.status_code == 200, response.text


def test_media_as_one_json_field(client, media_server, media_dir):
    media = [
        {"type": "first_frame", "url": f"{media_server}/wide-first.png"},
        {"type": "last_frame", "url": f"{media_server}/wide-last.png"},
    ]
    fields = [("model", "wan2.7-i2v"), ("seconds", "3"), ("media", json.dumps(media))]
    response = client.post("/v1/videos", files=[(k, (None, v)) for k, v in fields])
    assert response.status_code == 200, response.text
    assert response.json()["seconds"] == "3"
    # Beside uploads too: a first_clip uploaded, its last frame named in the JSON field.
    clip = clip_bytes(pan_frames(48))
    files = [
        ("model", (None, "wan2.7-i2v")),
        ("media", (None, json.dumps(media[1:]))),
        ("first_clip", ("c.mp4", clip, "video/mp4")),
    ]
    response = client.post("/v1/videos", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["source_seconds"] == 2.0


@pytest.mark.parametrize(
    "text", ["[{", '{"type": "first_frame"}', '"first_frame"', "[" * 40 + "]" * 40]
)
def test_a_bad_media_field_is_a_400_naming_media(client, text):
    fields = [("model", "wan2.7-i2v"), ("media", text)]
    response = client.post("/v1/videos", files=[(k, (None, v)) for k, v in fields])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "media"
