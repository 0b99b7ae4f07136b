"""The OpenAPI document: FastAPI's, made to describe what the server really does."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from wanserve.api.schemas import CreateVideoBody

REF_TEMPLATE = "#/components/schemas/{model}"


def _drop_422(document: dict[str, Any]) -> None:
    # Validation failures are answered 400 (see api/errors.py), never FastAPI's 422.
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def install_openapi(app: FastAPI) -> None:
    """Serve a schema with the create body's components and without 422 answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            body = CreateVideoBody.model_json_schema(ref_template=REF_TEMPLATE)
            schemas.update(body.pop("$defs", {}))
            schemas["CreateVideoBody"] = body
            _drop_422(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
