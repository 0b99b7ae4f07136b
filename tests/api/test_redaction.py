"""No API key, URL credential, file-system path or internal address in logs or errors."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from helpers import seed_body
from netguard import LoopbackOnly, loopback_fetcher
from wanserve.api.app import create_app
from wanserve.logs import RedactSecrets, configure_logging, redact

KEY = "sk-live-0123456789abcdef"

SECRET_TEXTS = [
    (f"Authorization: Bearer {KEY}", KEY),
    (f"headers={{'authorization': 'bearer {KEY}'}}", KEY),
    ("fetching https://alice:hunter2@media.example/a.png", "hunter2"),
    ("fetching http://token123@media.example/a.png", "token123"),
    ("got https://b.s3.amazonaws.com/v.mp4?X-Amz-Signature=deadbeef&X-Amz-Expires=60", "deadbeef"),
    ("https://x.oss.example/v.mp4?OSSAccessKeyId=AK42&Expires=1&Signature=c2ln", "AK42"),
    ("https://x.oss.example/v.mp4?OSSAccessKeyId=AK42&Expires=1&Signature=c2ln", "c2ln"),
    ("callback https://h.example/cb?api_key=abc987", "abc987"),
]


@pytest.mark.parametrize(("text", "secret"), SECRET_TEXTS)
def test_redact_hides_the_secret_and_keeps_the_rest(text, secret):
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_redact_leaves_plain_text_alone():
    text = "job video_1: queued (model wan2.7-i2v) from https://media.example/a.png?w=5"
    assert redact(text) == text


def test_configured_logging_redacts_messages_args_and_tracebacks(caplog):
    configure_logging("INFO")
    logger = logging.getLogger("wanserve.test_redaction")
    with caplog.at_level(logging.INFO):
        logger.info("request with Bearer %s", KEY)
        logger.warning("fetching %s", "https://user:pa55@h.example/x.png")
        try:
            raise ValueError(f"upstream said https://u:topsecret@h.example and Bearer {KEY}")
        except ValueError:
            logger.exception("failed")
    assert KEY not in caplog.text
    assert "pa55" not in caplog.text and "topsecret" not in caplog.text
    assert caplog.text.count("[redacted]") >= 4
    assert any(
        isinstance(f, RedactSecrets) for h in logging.getLogger().handlers for f in h.filters
    )


def test_api_logs_and_errors_never_echo_keys_credentials_paths_or_addresses(
    settings, media_server, caplog
):
    settings = settings.model_copy(update={"api_keys": [KEY]})
    handler_filter = RedactSecrets()
    caplog.handler.addFilter(handler_filter)
    bodies = [
        seed_body(media_server.replace("http://", "http://bob:s3cret@") + "/missing"),
        seed_body("http://169.254.169.254/latest/meta-data"),
        seed_body("http://10.1.2.3:8080/internal"),
        seed_body("file:///etc/passwd#"),
    ]
    backend = LoopbackOnly()
    app = create_app(settings, workers=0, fetcher=loopback_fetcher(settings, backend))
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        answers = [
            client.post("/v1/videos", json=body, headers={"Authorization": f"Bearer {KEY}"})
            for body in bodies
        ]
        answers.append(
            client.post("/v1/videos", json=bodies[0], headers={"Authorization": "Bearer wrong-k"})
        )
    for answer in answers:
        assert 400 <= answer.status_code < 500, answer.text
        for leak in (KEY, "s3cret", "169.254", "10.1.2.3", "/etc/passwd", "wrong-k"):
            assert leak not in answer.text
        assert str(settings.data_dir) not in answer.text
    assert KEY not in caplog.text and "s3cret" not in caplog.text
    assert backend.refused == []  # the SSRF policy refused them before any dialling


def test_a_crash_answers_500_without_paths_or_trace(settings):
    app = create_app(settings, workers=0)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError(f"cannot open {settings.data_dir}/files/secret.db")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/v1/boom")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "server_error"
    assert str(settings.data_dir) not in answer.text and "Traceback" not in answer.text
