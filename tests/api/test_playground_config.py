"""`GET /playground/config`: the limits the page checks are the ones the server enforces."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers import png_bytes, scene, seed_body, wav_bytes
from netguard import loopback_fetcher
from wanserve.api.app import create_app

STATIC = Path(__file__).resolve().parents[2] / "src" / "wanserve" / "api" / "static"


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_config_is_public_and_follows_the_settings(settings):
    settings.api_keys = ["k"]
    settings.max_image_bytes = 1234567
    settings.max_audio_bytes = 76543
    settings.max_multipart_body = 9_000_000
    settings.poll_after_ms = 250
    with TestClient(create_app(settings, workers=0)) as client:
        answer = client.get("/playground/config")
        assert client.get("/v1/models").status_code == 401  # the config needs no key
    assert answer.status_code == 200
    config = answer.json()
    assert config["auth_required"] is True
    assert config["image"]["max_bytes"] == 1234567
    assert config["audio"]["max_bytes"] == 76543
    assert config["max_upload_bytes"] == 9_000_000
    assert config["poll_after_ms"] == 250
    assert config["default_model"] == "wan2.7-i2v"


def test_an_open_server_says_so(client):
    assert client.get("/playground/config").json()["auth_required"] is False


@pytest.fixture
def config(client) -> dict:
    return dict(client.get("/playground/config").json())


def test_the_defaults_are_the_servers(config, client, media_server):
    body = seed_body(media_server)
    del body["seconds"], body["size"]
    video = client.post("/v1/videos", json=body).json()
    assert video["seconds"] == str(config["seconds"]["default"])
    assert video["size"] == config["size"]["default"]
    assert config["size"]["tiers"] == ["720P", "1080P"]


def _refusals(config: dict) -> list[tuple[str, dict[str, object]]]:
    """Requests just past each limit, and the param the 400 must name."""
    size = config["size"]
    step, high = size["pixel_step"], size["pixel_side_max"]
    return [
        ("seconds", {"seconds": str(config["seconds"]["max"] + 1)}),
        ("seconds", {"seconds": str(config["seconds"]["min"] - 1)}),
        ("seed", {"seed": config["seed"]["max"] + 1}),
        ("prompt", {"prompt": "p" * (config["prompt_max_chars"] + 1)}),
        ("negative_prompt", {"negative_prompt": "n" * (config["negative_prompt_max_chars"] + 1)}),
        ("size", {"size": f"{high + step}x{size['pixel_side_min']}"}),
        ("size", {"size": f"{size['pixel_side_min'] - step}x{size['pixel_side_min']}"}),
        ("size", {"size": f"{high}x{size['max_pixel_area'] // high + step}"}),
        ("size", {"size": f"{size['pixel_side_min'] + 1}x{size['pixel_side_min']}"}),
    ]


def _acceptances(config: dict) -> list[dict[str, object]]:
    """Requests exactly at each limit."""
    size = config["size"]
    high = size["pixel_side_max"]
    return [
        {"seconds": str(config["seconds"]["max"])},
        {"seconds": str(config["seconds"]["min"])},
        {"seed": config["seed"]["max"]},
        {"prompt": "p" * config["prompt_max_chars"]},
        {"negative_prompt": "n" * config["negative_prompt_max_chars"]},
        {"size": f"{high}x{size['max_pixel_area'] // high // 8 * 8}"},
        {"size": f"{size['pixel_side_min']}x{size['pixel_side_min']}"},
    ]


def test_just_past_each_limit_is_refused_naming_the_field(config, client, media_server):
    for param, fields in _refusals(config):
        answer = client.post("/v1/videos", json=seed_body(media_server, **fields))
        assert answer.status_code == 400, (param, fields)
        assert answer.json()["error"]["param"] == param, (param, fields)


def test_exactly_at_each_limit_is_accepted(settings, media_server):
    settings.create_rate = 0  # several creates in a row
    app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
    with TestClient(app) as client:
        config = client.get("/playground/config").json()
        for fields in _acceptances(config):
            answer = client.post("/v1/videos", json=seed_body(media_server, **fields))
            assert answer.status_code == 200, (fields, answer.text)


def test_media_limits_are_the_probes(config, client, media_server):
    image, audio = config["image"], config["audio"]
    low = image["min_side"]
    too_small = png_bytes(scene(low - 1, low, 0))
    too_flat = png_bytes(scene(int(low * image["max_aspect"]) + 8, low, 0))
    too_short = wav_bytes(audio["min_seconds"] - 0.5)
    first, last = seed_body(media_server)["media"]
    small_first = {"type": "first_frame", "url": data_url(too_small, "image/png")}
    flat_first = {"type": "first_frame", "url": data_url(too_flat, "image/png")}
    short_audio = {"type": "driving_audio", "url": data_url(too_short, "audio/wav")}
    cases = [
        ("media[0].url", [small_first, last]),
        ("media[0].url", [flat_first, last]),
        ("media[2].url", [first, last, short_audio]),
    ]
    for param, media in cases:
        answer = client.post("/v1/videos", json=seed_body(media_server, media=media))
        assert answer.status_code == 400, param
        assert answer.json()["error"]["param"] == param


def test_every_static_file_is_served(client):
    for path in STATIC.iterdir():
        answer = client.get("/" if path.name == "index.html" else f"/static/{path.name}")
        assert answer.status_code == 200, path.name
        assert answer.content == path.read_bytes()
