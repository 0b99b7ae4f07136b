"""Hostile inputs: each ends in a clear 4xx in OpenAI's error shape, and leaves nothing.

Every case is one request against an app on a fresh data dir. The last test sends them
all to one app and checks that no job row and no stored file was left behind. Media come
as data: URLs or uploads, and the fetcher dials only 127.0.0.1 (see api_loopback).
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from helpers import png_bytes, scene, wav_bytes
from netguard import loopback_fetcher
from wanserve.api.app import create_app
from wanserve.settings import Settings

LIMIT = 4 * 1024 * 1024  # body limit of these tests' app, JSON and multipart alike


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header claims `width` x `height` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


def data_url(data: bytes, media_type: str) -> str:
    """`data` as a base64 data: URL."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


FIRST = png_bytes(scene(640, 360, 0))
LAST = png_bytes(scene(640, 360, 200))
AUDIO = wav_bytes(3.0, rate=8000)
PNG, WAV = "image/png", "audio/wav"


def media(first: str | None = None, last: str | None = None, audio: str | None = None) -> list:
    """A media list: the good frames unless replaced, plus `audio` when given."""
    items = [
        {"type": "first_frame", "url": first or data_url(FIRST, PNG)},
        {"type": "last_frame", "url": last or data_url(LAST, PNG)},
    ]
    if audio:
        items.append({"type": "driving_audio", "url": audio})
    return items


def body(**fields: Any) -> dict[str, Any]:
    """A valid create body with `fields` replaced."""
    base: dict[str, Any] = {"model": "wan2.7-i2v", "media": media(), "seconds": "2"}
    base.update(fields)
    return base


def raw_json(text: str | bytes) -> dict[str, Any]:
    """Request kwargs for a JSON body sent byte for byte."""
    raw = text.encode() if isinstance(text, str) else text
    return {"content": raw, "headers": {"content-type": "application/json"}}


def form(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    """Request kwargs for a multipart body; a bytes value is a file part."""
    files = [
        (k, ("f.bin", v, "application/octet-stream") if isinstance(v, bytes) else (None, v))
        for k, v in fields
    ]
    return {"files": files}


def good_form(*extra: tuple[str, Any]) -> list[tuple[str, Any]]:
    """The SDK-style fields of a valid request."""
    return [
        ("model", "wan2.7-i2v"),
        ("seconds", "2"),
        ("media[][type]", "first_frame"),
        ("media[][type]", "last_frame"),
        ("media[][url]", data_url(FIRST, PNG)),
        ("media[][url]", data_url(LAST, PNG)),
        *extra,
    ]


def nested(depth: int) -> str:
    """`{"model": [[[...]]]}` nested `depth` deep."""
    return '{"model": ' + "[" * depth + "]" * depth + "}"


@dataclass(frozen=True)
class Case:
    """One hostile request and what it must get."""

    kwargs: dict[str, Any] | Callable[[], dict[str, Any]]
    status: int = 400
    param: str | None = None
    code: str | None = None
    method: str = "POST"
    path: str = "/v1/videos"
    headers: dict[str, str] = field(default_factory=dict)


def create(**fields: Any) -> dict[str, Any]:
    """Request kwargs for a JSON create body."""
    return {"json": body(**fields)}


CASES: dict[str, Case] = {
    # Bad JSON shapes and values
    "json-truncated": Case(raw_json('{"model": "wan2.7-i2v", "media": ['), code="invalid_json"),
    "json-array": Case(raw_json("[1, 2, 3]"), code="invalid_json"),
    "json-string": Case(raw_json('"wan2.7-i2v"'), code="invalid_json"),
    "json-null": Case(raw_json("null"), code="invalid_json"),
    "json-empty-body": Case(raw_json(""), code="invalid_json"),
    "json-deep-nesting": Case(raw_json(nested(100_000)), code="invalid_json"),
    "json-nesting-over-depth-limit": Case(raw_json(nested(40)), code="invalid_json"),
    "json-invalid-utf8": Case(
        raw_json(b'{"model": "wan\xff\xfe", "media": []}'), code="invalid_json"
    ),
    "json-latin1": Case(
        raw_json('{"model": "w", "prompt": "caf\xe9"}'.encode("latin-1")), code="invalid_json"
    ),
    "huge-integer-digits": Case(
        raw_json('{"model": "wan2.7-i2v", "seed": 1' + "0" * 5000 + "}"), code="invalid_json"
    ),
    "huge-seed": Case(create(seed=10**30), param="seed"),
    "huge-seconds-float": Case(create(seconds=1e308), param="seconds"),
    "nan-seconds": Case(
        raw_json('{"model": "wan2.7-i2v", "seconds": NaN, "media": []}'), param="seconds"
    ),
    "infinite-seed": Case(
        raw_json('{"model": "wan2.7-i2v", "seed": -Infinity, "media": []}'), param="seed"
    ),
    "negative-seconds": Case(create(seconds=-5), param="seconds"),
    "model-wrong-type": Case(create(model=["wan2.7-i2v"]), param="model"),
    "model-missing": Case({"json": {"media": media()}}, param="model"),
    "model-zero-width-space": Case(
        create(model="wan2.7-i2v\u200b"), 404, "model", "model_not_found"
    ),
    "model-too-long": Case(create(model="m" * 10_000), param="model"),
    "media-object": Case(create(media={"first_frame": "x"}), param="media"),
    "media-strings": Case(create(media=["a.png", "b.png"]), param="media[0]"),
    "media-too-many": Case(create(media=media() * 2), param="media"),
    "media-empty-url": Case(
        create(media=[{"type": "first_frame", "url": ""}]), param="media[0].url"
    ),
    "media-missing-last": Case(create(media=media()[:1]), param="media"),
    "prompt-list": Case(create(prompt=["a", "b"]), param="prompt"),
    "prompt-lone-surrogate": Case(
        raw_json(json.dumps(body()).replace('"model"', '"prompt": "\\ud800", "model"')),
        param="prompt",
    ),
    "prompt-too-long-emoji": Case(create(prompt="\U0001f600" * 5001), param="prompt"),
    "seconds-fullwidth-digit": Case(create(seconds="\uff15"), param="seconds"),
    "size-rtl-override": Case(create(size="\u202e720P"), param="size"),
    "watermark-object": Case(create(watermark={"on": True}), param="watermark"),
    # Content types and multipart
    "content-type-text": Case(
        {"content": b"model=wan", "headers": {"content-type": "text/plain"}},
        code="unsupported_content_type",
    ),
    "content-type-xml": Case(
        {"content": b"<video/>", "headers": {"content-type": "application/xml"}},
        code="unsupported_content_type",
    ),
    "no-content-type-garbage": Case({"content": b"\x00\x01\x02"}, code="invalid_json"),
    "urlencoded-without-media": Case({"data": {"model": "wan2.7-i2v"}}, param="media"),
    "multipart-no-boundary": Case(
        {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
        code="invalid_multipart",
    ),
    "multipart-malformed": Case(
        {
            "content": b"--xyz\r\nContent-Disposition: form-data\r\n\r\nbroken",
            "headers": {"content-type": "multipart/form-data; boundary=xyz"},
        }
    ),
    "multipart-unknown-file-part": Case(form(good_form(("evil", b"\x7fELF"))), param="evil"),
    "multipart-path-traversal-filename": Case(
        {
            "files": [
                ("model", (None, "wan2.7-i2v")),
                ("first_frame", ("../../../etc/passwd", b"root:x:0:0", "image/png")),
                ("last_frame", ("..\\..\\x.png", LAST, "image/png")),
            ]
        },
        param="first_frame",
    ),
    "multipart-too-many-fields": Case(
        form(good_form(*[("prompt", "x")] * 70)), code="invalid_multipart"
    ),
    "multipart-too-many-files": Case(
        form([("model", "wan2.7-i2v")] + [("first_frame", FIRST)] * 9), code="invalid_multipart"
    ),
    "multipart-empty-upload": Case(
        form([("model", "wan2.7-i2v"), ("first_frame", b""), ("last_frame", LAST)]),
        param="first_frame",
    ),
    "multipart-media-type-without-url": Case(
        form([("model", "wan2.7-i2v"), ("media[][type]", "first_frame")]), param="media[0].url"
    ),
    # Oversized bodies
    "json-over-limit": Case(
        {
            "content": b"{" + b" " * (LIMIT + 10) + b"}",
            "headers": {"content-type": "application/json"},
        },
        413,
        code="payload_too_large",
    ),
    "json-over-limit-chunked": Case(
        lambda: {
            "content": iter([b" " * (1 << 20)] * 5),
            "headers": {"content-type": "application/json"},
        },
        413,
        code="payload_too_large",
    ),
    "multipart-over-limit": Case(
        form([("model", "wan2.7-i2v"), ("first_frame", b"\x89PNG" + b"\x00" * (LIMIT + 10))]),
        413,
        code="payload_too_large",
    ),
    "data-url-over-image-limit": Case(
        create(media=media(first=data_url(b"\x89PNG" + b"\x00" * (LIMIT // 2), PNG))),
        param="media[0].url",
    ),
    # Bad media
    "png-bomb-100000x100000": Case(
        create(media=media(first=data_url(bomb_png(), PNG))), param="media[0].url"
    ),
    "png-truncated": Case(
        create(media=media(last=data_url(LAST[: len(LAST) // 2], PNG))), param="media[1].url"
    ),
    "png-header-only": Case(
        create(media=media(first=data_url(FIRST[:16], PNG))), param="media[0].url"
    ),
    "image-1x1": Case(
        create(media=media(first=data_url(png_bytes(scene(1, 1, 0)), PNG))), param="media[0].url"
    ),
    "image-aspect-1-to-9": Case(
        create(media=media(first=data_url(png_bytes(scene(240, 2160, 0)), PNG))),
        param="media[0].url",
    ),
    "image-is-text": Case(
        create(media=media(first=data_url(b"hello, not an image", PNG))), param="media[0].url"
    ),
    "image-is-audio": Case(create(media=media(first=data_url(AUDIO, PNG))), param="media[0].url"),
    "audio-1s": Case(
        create(media=media(audio=data_url(wav_bytes(1.0, rate=8000), WAV))), param="media[2].url"
    ),
    "audio-60s": Case(
        create(media=media(audio=data_url(wav_bytes(60.0, rate=8000), WAV))), param="media[2].url"
    ),
    "audio-is-image": Case(create(media=media(audio=data_url(FIRST, WAV))), param="media[2].url"),
    "audio-truncated-wav": Case(
        create(media=media(audio=data_url(AUDIO[:40], WAV))), param="media[2].url"
    ),
    "data-url-bad-base64": Case(
        create(media=media(first="data:image/png;base64,@@@")), param="media[0].url"
    ),
    "media-url-internal-address": Case(
        create(media=media(first="http://169.254.169.254/latest")),
        param="media[0].url",
        code="media_url_forbidden",
    ),
    "media-url-file-scheme": Case(
        create(media=media(last="file:///etc/passwd")),
        param="media[1].url",
        code="media_url_forbidden",
    ),
    # Bad headers
    "idempotency-key-huge": Case(
        create(), param="idempotency-key", headers={"Idempotency-Key": "k" * 10_000}
    ),
    "idempotency-key-too-long": Case(
        create(), param="idempotency-key", headers={"Idempotency-Key": "k" * 256}
    ),
    # Bad list, path and query params
    "list-limit-zero": Case({}, method="GET", param="limit", path="/v1/videos?limit=0"),
    "list-limit-huge": Case(
        {}, method="GET", param="limit", path="/v1/videos?limit=99999999999999999999"
    ),
    "list-limit-text": Case({}, method="GET", param="limit", path="/v1/videos?limit=ten"),
    "list-order-unknown": Case({}, method="GET", param="order", path="/v1/videos?order=sideways"),
    "list-after-unknown": Case({}, method="GET", param="after", path="/v1/videos?after=video_nope"),
    "content-variant-unknown": Case(
        {},
        method="GET",
        param="variant",
        path="/v1/videos/video_x/content?variant=../../etc/passwd",
    ),
    "path-traversal-id": Case({}, 404, method="GET", path="/v1/videos/..%2F..%2Fwanserve.db"),
    "remix-unknown-video": Case(
        {"json": {"prompt": "x"}}, 404, "video_id", path="/v1/videos/video_nope/remix"
    ),
    "remix-prompt-empty": Case(
        {"json": {"prompt": ""}}, param="prompt", path="/v1/videos/video_nope/remix"
    ),
    "cancel-unknown-video": Case({}, 404, "video_id", path="/v1/videos/nope/cancel"),
}


@pytest.fixture
def hostile_app(settings: Settings) -> Iterator[tuple[TestClient, Settings]]:
    """An app with small body limits and no rate limit (so the whole barrage gets in)."""
    settings = settings.model_copy(
        update={
            "max_json_body": LIMIT,
            "max_multipart_body": LIMIT,
            "create_rate": 0,
            "max_image_bytes": LIMIT // 4,
            "media_allowed_hosts": [],
        }
    )
    app = create_app(settings, workers=0, fetcher=loopback_fetcher(settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, settings


def send(client: TestClient, case: Case) -> Any:
    """Send one case; its kwargs may be built lazily (generators are single-use)."""
    kwargs = case.kwargs() if callable(case.kwargs) else dict(case.kwargs)
    headers = {**kwargs.pop("headers", {}), **case.headers}
    return client.request(case.method, case.path, headers=headers, **kwargs)


def assert_clear_refusal(response: Any, case: Case) -> None:
    """The expected 4xx, in OpenAI's error shape, naming the param or code expected."""
    assert response.status_code == case.status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if case.param is not None:
        assert error["param"] == case.param, error
    if case.code is not None:
        assert error["code"] == case.code, error


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_input_is_a_clear_4xx(hostile_app, case):
    client, _ = hostile_app
    assert_clear_refusal(send(client, case), case)


def test_at_least_40_distinct_hostile_inputs():
    assert len(CASES) >= 40
    assert len(
        {
            json.dumps(c.kwargs, default=repr, sort_keys=True) + c.path + str(c.headers)
            for c in CASES.values()
        }
    ) == len(CASES)


def test_no_job_or_file_left_behind_after_all_of_them(hostile_app):
    client, settings = hostile_app
    for case in CASES.values():
        assert 400 <= send(client, case).status_code < 500
    assert client.get("/v1/videos").json()["data"] == []
    services = client.app.state.services  # type: ignore[attr-defined]
    assert services.store.count_unfinished("public") == 0
    files = settings.data_dir / "files"
    assert not files.exists() or [p for p in files.rglob("*") if p.is_file()] == []


@pytest.fixture
def live_server(settings: Settings) -> Iterator[int]:
    """The app under a real uvicorn on 127.0.0.1; yields its port."""
    settings = settings.model_copy(update={"max_json_body": 1000, "max_multipart_body": 1000})
    app: FastAPI = create_app(settings, workers=0, fetcher=loopback_fetcher(settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)


def _chunked_post(port: int, content_type: str, chunks: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/videos HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        )
        try:
            for _ in range(chunks):
                sock.sendall(b"1f4\r\n" + b"x" * 500 + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may answer and close before the whole body is sent
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=b"])
def test_chunked_body_over_limit_is_413_through_uvicorn(live_server, content_type):
    answer = _chunked_post(live_server, content_type, chunks=10)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(payload)["error"]["code"] == "payload_too_large"
