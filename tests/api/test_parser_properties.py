"""Properties of the create-request parser (api/forms.py), checked with hypothesis.

- JSON and the openai SDK's multipart form of the same request parse to the same
  CreateRequest (or fail on the same param).
- Any body either parses or is refused with a 400 that names a param; nothing else
  escapes (no 500).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.requests import Request

from wanserve.api.errors import validation_response
from wanserve.api.forms import create_request_from, parse_json_body, read_form
from wanserve.errors import InvalidRequest
from wanserve.jobs.intake import CreateRequest

FAST = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FIELDS = ["model", "media", "prompt", "negative_prompt", "size", "seconds",
          "prompt_extend", "watermark", "seed"]  # fmt: skip
FORM_NAMES = [*FIELDS, "media[][type]", "media[][url]", "media[0][url]", "media[x]"]

# Form values are text: no NUL, and line ends the multipart encoder may normalise.
text = st.text(st.characters(exclude_characters="\x00\r"), max_size=40)
hosts = st.sampled_from(["a.example", "b.example"])
urls = st.builds(lambda host, path: f"https://{host}/{path}", hosts, text)
media = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["first_frame", "last_frame", "driving_audio", "poster"]),
            "url": urls,
        }
    ),
    # An empty list has no form spelling (the SDK sends no field); intake refuses both.
    min_size=1,
    max_size=4,
)
requests = st.fixed_dictionaries(
    {"model": st.sampled_from(["wan2.7-i2v", "other", ""]), "media": media},
    optional={
        "prompt": text,
        "negative_prompt": text,
        "size": st.sampled_from(["720P", "1080p", "1280x720", "480P", "1921x1080", "x"]),
        "seconds": st.integers(0, 20),
        "prompt_extend": st.booleans(),
        "watermark": st.booleans(),
        "seed": st.integers(-5, 2**31 + 5),
    },
)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sdk_fields(body: dict[str, Any]) -> list[tuple[str, str]]:
    """`body` as the openai SDK's form fields."""
    fields = [(k, _form_value(v)) for k, v in body.items() if k != "media"]
    # The SDK groups repeated keys: every media[][type], then every media[][url].
    fields += [("media[][type]", m["type"]) for m in body["media"]]
    fields += [("media[][url]", m["url"]) for m in body["media"]]
    return fields


def _form_request(fields: list[tuple[str, str]]) -> Request:
    """A Starlette request carrying `fields` as a multipart form, encoded by httpx."""
    encoded = httpx.Request(
        "POST", "http://t/v1/videos", files=[(k, (None, v.encode())) for k, v in fields]
    )
    raw = encoded.read()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    headers = [(k.lower().encode(), v.encode()) for k, v in encoded.headers.items()]
    scope = {"type": "http", "method": "POST", "path": "/v1/videos", "headers": headers}
    return Request(scope, receive)


def _from_form(fields: list[tuple[str, str]]) -> CreateRequest:
    form, uploads = asyncio.run(read_form(_form_request(fields), 1 << 20))
    return create_request_from(form, uploads)


def _from_json(body: Any) -> CreateRequest:
    return create_request_from(parse_json_body(json.dumps(body).encode()), [])


def _outcome(parse: Any) -> CreateRequest | tuple[str, str | None]:
    """The parsed request, or ("refused", param) naming where it failed."""
    try:
        return parse()  # type: ignore[no-any-return]
    except InvalidRequest as exc:
        return ("refused", exc.param)
    except ValidationError as exc:
        return ("refused", _param_of(exc))


def _param_of(exc: ValidationError) -> str | None:
    scope = {"type": "http", "method": "POST", "path": "/v1/videos", "headers": []}
    response = validation_response(Request(scope), exc.errors())
    assert response.status_code == 400
    return json.loads(bytes(response.body))["error"]["param"]  # type: ignore[no-any-return]


@FAST
@given(requests)
def test_json_and_sdk_multipart_parse_the_same(body):
    from_json = _outcome(lambda: _from_json(body))
    from_form = _outcome(lambda: _from_form(_sdk_fields(body)))
    assert from_json == from_form


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | text, json_values, max_size=8) | st.builds(
    lambda base, extra: {**base, **extra},
    requests,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
)


@FAST
@given(bodies)
def test_any_json_object_parses_or_is_a_400_naming_a_param(body):
    outcome = _outcome(lambda: _from_json(body))
    if isinstance(outcome, tuple):
        assert outcome[1], f"no param named for {body!r}"


@FAST
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_are_a_json_object_or_invalid_json(raw):
    try:
        body = parse_json_body(raw)
    except InvalidRequest as exc:
        assert exc.code == "invalid_json"
    else:
        assert isinstance(body, dict)


@FAST
@given(st.lists(st.tuples(st.sampled_from(FORM_NAMES), text), max_size=10))
def test_any_form_parses_or_is_a_400_naming_a_param(fields):
    outcome = _outcome(lambda: _from_form(fields))
    if isinstance(outcome, tuple):
        assert outcome[1], f"no param named for {fields!r}"
