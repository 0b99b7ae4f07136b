"""schemathesis against the app's own OpenAPI schema: no 5xx, no answer off the schema.

A bounded, deterministic run (hypothesis derandomized, no example database) over every
operation, with valid and with invalid data. Media URLs it makes up go to a fetcher that
never resolves names and dials only 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from netguard import loopback_fetcher
from pgtools import throwaway_schema
from wanserve.api.app import create_app
from wanserve.settings import Settings

EXAMPLES_PER_OPERATION = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]
)
def api_schema(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The schema served by an app on a fresh data dir, quotas off so creates go deep.

    On PostgreSQL too: text it cannot store (NUL, which negative cases send wherever the
    schema says it is refused) was a 500 there and nowhere else.
    """
    config = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        media_allowed_hosts=["127.0.0.1"],
        workers=0,
        create_rate=0,
        max_unfinished_jobs=0,
        fetch_connect_timeout=1.0,
        fetch_timeout=2.0,
    )
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            config.database_url = stack.enter_context(throwaway_schema())
        app = create_app(config, workers=0, fetcher=loopback_fetcher(config))
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
        app.state.services.store.engine.dispose()


def _fuzz(operation: Any, mode: GenerationMode, statuses: Counter[int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call()
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_to_the_schema(api_schema, mode, record_property):
    started, statuses, operations = time.monotonic(), Counter[int](), 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        try:
            _fuzz(operation, mode, statuses)
        except Unsatisfiable:
            # Only in negative mode: inputs that are free-form strings (a video id) or
            # none at all have no invalid values to send.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        operations += 1
    cases = sum(statuses.values())
    record_property("cases", cases)
    print(
        f"schemathesis {mode.value}: {cases} cases on {operations} operations "
        f"in {time.monotonic() - started:.1f} s, statuses {dict(sorted(statuses.items()))}"
    )
    assert operations >= 6 and cases >= 80


def test_schema_declares_the_error_statuses(api_schema):
    paths = api_schema.raw_schema["paths"]
    create = paths["/v1/videos"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "429"} <= set(create)
    assert {"400", "401", "404"} <= set(paths["/v1/videos/{video_id}"]["get"]["responses"])
