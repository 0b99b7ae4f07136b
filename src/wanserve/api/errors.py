"""The one place where exceptions become HTTP error responses.

`/v1` routes answer OpenAI's `{"error": {message, type, param, code}}`; the
DashScope-compatible `/api/v1` routes answer DashScope's `{request_id, code, message}`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from wanserve.errors import (
    Conflict,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RateLimited,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    WanserveError,
)

logger = logging.getLogger(__name__)

# Most specific first: the first matching class decides the status.
STATUS_BY_ERROR: list[tuple[type[WanserveError], int]] = [
    (ModelNotFound, 404),
    (Conflict, 400),
    (InvalidRequest, 400),
    (NotFound, 404),
    (Unauthorized, 401),
    (RequestTimeout, 408),
    (PayloadTooLarge, 413),
    (RangeNotSatisfiable, 416),
    (RateLimited, 429),
    (Unavailable, 503),
]
OPENAI_TYPES = {
    401: "authentication_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
DASHSCOPE_CODES = {
    400: "InvalidParameter",
    401: "InvalidApiKey",
    403: "AccessDenied",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeOut",
    413: "RequestTooLarge",
    429: "Throttling",
    500: "InternalError",
    503: "ServiceUnavailable",
}
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _error_headers(exc: WanserveError) -> dict[str, str] | None:
    retry_after = exc.retry_after if isinstance(exc, RateLimited | Unavailable) else None
    if retry_after is not None:
        return {"Retry-After": str(max(1, round(retry_after)))}
    if isinstance(exc, RangeNotSatisfiable):
        return {"Content-Range": f"bytes */{exc.size}"}
    return None


def param_from_location(location: Sequence[Any]) -> str | None:
    """`("body", "media", 1, "url")` -> `"media[1].url"`."""
    parts = list(location)
    if parts and parts[0] in ("body", "query", "header", "path", "form"):
        parts = parts[1:]
    param = ""
    for part in parts:
        if isinstance(part, int):
            param += f"[{part}]"
        else:
            param += f".{part}" if param else str(part)
    return param or None


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in the wire shape of the API family the request belongs to."""
    if request.url.path.startswith("/api/"):
        body: dict[str, Any] = {
            "request_id": str(uuid.uuid4()),
            "code": DASHSCOPE_CODES.get(status, "InvalidParameter"),
            "message": f"{param}: {message}" if param and param not in message else message,
        }
    else:
        body = {
            "error": {
                "message": message,
                "type": OPENAI_TYPES.get(status, "invalid_request_error"),
                "param": param,
                "code": code,
            }
        }
    return JSONResponse(body, status_code=status, headers=headers)


def domain_error_response(request: Request, exc: WanserveError) -> JSONResponse:
    """The answer to a domain error: its status, its family's shape, its headers."""
    status = next((s for cls, s in STATUS_BY_ERROR if isinstance(exc, cls)), 400)
    return error_response(
        request, status, exc.message, code=exc.code, param=exc.param, headers=_error_headers(exc)
    )


def _validation_message(error: dict[str, Any], param: str | None) -> str:
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return f"Invalid value for '{param}': {message}." if param else f"{message}."


def validation_response(request: Request, errors: Sequence[Any]) -> JSONResponse:
    """A 400 naming the first invalid field (never FastAPI's default 422)."""
    first = dict(errors[0]) if errors else {}
    param = param_from_location(first.get("loc", ()))
    if first.get("type") == "missing" and param:
        message = f"Missing required parameter: '{param}'."
    elif first.get("type") == "json_invalid":
        param, message = None, "The request body is not valid JSON."
    else:
        message = _validation_message(first, param)
    return error_response(request, 400, message, code="invalid_value", param=param)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error one shape."""

    @app.exception_handler(WanserveError)
    async def _domain(request: Request, exc: WanserveError) -> JSONResponse:
        return domain_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(request, exc.errors())

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError) -> JSONResponse:
        return validation_response(request, exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route for {request.method} {request.url.path}."
        return error_response(
            request,
            exc.status_code,
            message,
            code=HTTP_CODES.get(exc.status_code),
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request,
            500,
            "The server had an error while processing your request.",
            code="server_error",
        )
