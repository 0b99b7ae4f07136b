"""The openai SDK's multipart form parses into the same request as JSON."""

from __future__ import annotations

from helpers import seed_body


def _form(body: dict, grouped: bool) -> list[tuple[str, str]]:
    fields = [(k, str(v)) for k, v in body.items() if k != "media"]
    media = body["media"]
    if grouped:  # what the SDK sends: all types, then all urls
        fields += [("media[][type]", m["type"]) for m in media]
        fields += [("media[][url]", m["url"]) for m in media]
    else:
        for m in media:
            fields += [("media[][type]", m["type"]), ("media[][url]", m["url"])]
    return fields


def test_grouped_and_interleaved_forms_match_json(client, media_server):
    body = seed_body(media_server, audio=True, seed=5, watermark="true", prompt_extend="false")
    for grouped in (True, False):
        response = client.post(
            "/v1/videos",
            files=[(k, (None, v)) for k, v in _form(body, grouped)],
        )
        assert response.status_code == 200, response.text
        video = response.json()
        assert video["seed"] == 5 and video["seconds"] == "2" and video["size"] == "720P"


def test_indexed_media_fields(client, media_server):
    media = seed_body(media_server)["media"]
    fields = [("model", "wan2.7-i2v"), ("seconds", "2")]
    for i, m in enumerate(media):
        fields += [(f"media[{i}][url]", m["url"]), (f"media[{i}][type]", m["type"])]
    response = client.post("/v1/videos", files=[(k, (None, v)) for k, v in fields])
    assert response.status_code == 200, response.text


def test_file_parts_upload_media(client, media_dir):
    files = [
        ("model", (None, "wan2.7-i2v")),
        ("input_reference", ("a.png", (media_dir / "wide-first.png").read_bytes(), "image/png")),
        ("last_frame", ("b.bin", (media_dir / "wide-last.png").read_bytes(), "text/plain")),
        ("driving_audio", ("c.wav", (media_dir / "audio.wav").read_bytes(), "audio/wav")),
    ]
    response = client.post("/v1/videos", files=files)
    assert response.status_code == 200, response.text


def test_bad_upload_names_the_part(client, media_dir):
    files = [
        ("model", (None, "wan2.7-i2v")),
        ("first_frame", ("a.png", b"not an image at all", "image/png")),
        ("last_frame", ("b.png", (media_dir / "wide-last.png").read_bytes(), "image/png")),
    ]
    response = client.post("/v1/videos", files=files)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "first_frame"


def test_malformed_multipart_is_400(client):
    response = client.post(
        "/v1/videos",
        content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 400
    assert "error" in response.json()


def test_json_sent_as_a_form_by_bare_curl_is_read_as_json(client, media_server):
    import json

    response = client.post(
        "/v1/videos",
        content=json.dumps(seed_body(media_server)).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def test_urlencoded_form_fields(client, media_server):
    media = seed_body(media_server)["media"]
    fields = {"model": "wan2.7-i2v", "seconds": "3", "media[0][type]": media[0]["type"]}
    fields |= {"media[0][url]": media[0]["url"], "media[1][type]": media[1]["type"]}
    fields |= {"media[1][url]": media[1]["url"]}
    response = client.post("/v1/videos", data=fields)
    assert response.status_code == 200, response.text
    assert response.json()["seconds"] == "3"


def test_an_oversized_upload_is_refused_naming_the_part(settings, media_dir):
    from fastapi.testclient import TestClient

    from wanserve.api.app import create_app

    settings.max_image_bytes = 1000
    with TestClient(create_app(settings, workers=0)) as client:
        files = [
            ("model", (None, "wan2.7-i2v")),
            ("first_frame", ("a.png", (media_dir / "wide-first.png").read_bytes(), "image/png")),
            ("last_frame", ("b.png", (media_dir / "wide-last.png").read_bytes(), "image/png")),
        ]
        response = client.post("/v1/videos", files=files)
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("media_too_large", "first_frame")
        assert client.get("/v1/videos").json()["data"] == []
