"""A real local HTTP fake of a hosted video provider, for the upstream engine tests.

It speaks two protocols on one threaded server on 127.0.0.1 (ephemeral port):

- DashScope, under `/api/v1`: video-synthesis submit (`X-DashScope-Async`), task fetch,
  task cancel, the temporary-file upload policy and its OSS form upload, and signed
  result URLs that expire.
- OpenAI Videos, under `/v1`: create, retrieve, content, cancel.

Tests steer it through plain attributes (`running_polls`, `fail_with`, ...) and `faults`,
and read what it saw from `submissions`, `polls`, `cancels`, `uploads` and `log`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakes.context import tiny_mp4

API_KEY = "sk-test-provider"
VIDEO = tiny_mp4()  # the one result every task produces


@dataclass
class Fault:
    """Answer the next `count` matching requests with `status` (None: drop the connection)."""

    status: int | None
    count: int = 1
    method: str | None = None
    path_contains: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Task:
    """One provider task (a DashScope task or an OpenAI video)."""

    task_id: str
    body: dict[str, Any]
    polls: int = 0
    status: str = "PENDING"  # DashScope spelling; mapped for the OpenAI protocol
    submit_time: float = field(default_factory=time.time)


class FakeProvider:
    """The fake provider; use as a context manager, read `base_url` / `openai_url`."""

    def __init__(self) -> None:
        self.running_polls = 2  # polls answered RUNNING before the task finishes
        self.fail_with: tuple[str, str] | None = None  # (code, message) to fail tasks
        self.always_unknown = False
        self.url_window = 60.0  # seconds a result URL stays valid
        self.expired_urls = 0  # the next N result URLs are issued already expired
        self.report_progress = True  # OpenAI protocol: include `progress`
        self.can_extend = True  # OpenAI protocol: POST /v1/videos/extensions exists
        self.faults: list[Fault] = []
        self.tasks: dict[str, Task] = {}
        self.submissions: list[dict[str, Any]] = []  # {"protocol", "body", "headers"}
        self.cancels: list[str] = []
        self.uploads: dict[str, bytes] = {}
        self.log: list[tuple[float, str, str, int]] = []  # (time, method, path, status)
        self.policies = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll interval keeps shutdown (once per test) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """The DashScope base URL (like `https://dashscope-intl.aliyuncs.com/api/v1`)."""
        return self.origin + "/api/v1"

    @property
    def openai_url(self) -> str:
        """The OpenAI base URL (like `https://api.openai.com/v1`)."""
        return self.origin + "/v1"

    @property
    def poll_count(self) -> int:
        """How many task fetches were answered so far."""
        return sum(task.polls for task in self.tasks.values())

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first fault matching this request, with one use consumed."""
        with self._lock:
            for fault in self.faults:
                if (
                    fault.count > 0
                    and fault.method in (None, method)
                    and fault.path_contains in path
                ):
                    fault.count -= 1
                    return fault
        return None

    def create_task(self, protocol: str, body: dict[str, Any], headers: dict[str, str]) -> Task:
        """Record one submission and start its task."""
        with self._lock:
            self.submissions.append({"protocol": protocol, "body": body, "headers": headers})
            prefix = "video_" if protocol.startswith("openai") else ""
            task = Task(prefix + uuid.uuid4().hex, body)
            self.tasks[task.task_id] = task
        return task

    def advance(self, task: Task) -> None:
        """One poll of `task`: PENDING, RUNNING for `running_polls`, then its end state."""
        with self._lock:
            task.polls += 1
            if task.status in ("SUCCEEDED", "FAILED", "CANCELED"):
                return
            if self.always_unknown:
                task.status = "UNKNOWN"
            elif task.polls <= self.running_polls:
                task.status = "RUNNING"
            else:
                task.status = "FAILED" if self.fail_with else "SUCCEEDED"

    def result_url(self, task: Task) -> str:
        """A signed result URL; valid for `url_window` seconds unless issued expired."""
        with self._lock:
            expired = self.expired_urls > 0
            self.expired_urls -= int(expired)
        expires = time.time() + (-1.0 if expired else self.url_window)
        return f"{self.origin}/oss/results/{task.task_id}.mp4?Expires={expires:.3f}&Signature=s"


def _handler_for(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        provider = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    provider: FakeProvider

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        """Route a GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Route a POST."""
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        fault = self.provider.take_fault(method, url.path)
        if fault is not None:
            return self._fault(method, url.path, fault)
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(url.path)
            if route_method == method and match:
                return getattr(self, name)(parse_qs(url.query), *match.groups())
        self._send(404, {"code": "NotFound", "message": f"no route {method} {url.path}"})

    def _fault(self, method: str, path: str, fault: Fault) -> None:
        if fault.status is None:
            self._record(method, path, 0)
            self.close_connection = True  # no answer at all: a connection error
            return
        body = json.dumps({"code": "Throttling" if fault.status == 429 else "InternalError"})
        self._raw(fault.status, body.encode(), "application/json", fault.headers)

    def _record(self, method: str, path: str, status: int) -> None:
        with self.provider._lock:
            self.provider.log.append((time.monotonic(), method, path, status))

    def _send(self, status: int, body: Any) -> None:
        self._raw(status, json.dumps(body).encode(), "application/json")

    def _raw(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self._record(self.command, urlsplit(self.path).path, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def authorized(self, protocol: str) -> bool:
        """Check the Bearer key, answering 401 in the protocol's error shape when wrong."""
        if self.headers.get("Authorization") == f"Bearer {API_KEY}":
            return True
        error = {"code": "invalid_api_key", "message": "Invalid API key."}
        if protocol == "openai":
            self._send(401, {"error": error})
        else:
            self._send(401, {"code": "InvalidApiKey", "message": "Invalid API-key provided."})
        return False

    def json_body(self) -> Any:
        """The request body as JSON."""
        return json.loads(self.body or b"{}")

    def task(self, task_id: str) -> Task | None:
        """The task, or None."""
        return self.provider.tasks.get(task_id)

    # DashScope ---------------------------------------------------------------------

    def ds_submit(self, query: dict[str, list[str]]) -> None:
        """`POST /api/v1/services/aigc/video-generation/video-synthesis`."""
        if not self.authorized("dashscope"):
            return
        if self.headers.get("X-DashScope-Async") != "enable":
            message = "current user api does not support synchronous calls"
            return self._send(403, {"code": "AccessDenied", "message": message})
        body = self.json_body()
        media = body.get("input", {}).get("media") or []
        if not any(item.get("type") in ("first_frame", "first_clip") for item in media):
            message = "no first_frame or first_clip"
            return self._send(400, {"code": "InvalidParameter", "message": message})
        for item in media:
            if item["url"].startswith("oss://") and not self._oss_ok(item["url"]):
                message = f"cannot resolve {item['url']}"
                return self._send(400, {"code": "InvalidParameter", "message": message})
        task = self.provider.create_task("dashscope", body, dict(self.headers))
        output = {"task_id": task.task_id, "task_status": "PENDING"}
        self._send(200, {"request_id": uuid.uuid4().hex, "output": output})

    def _oss_ok(self, url: str) -> bool:
        resolve = self.headers.get("X-DashScope-OssResourceResolve") == "enable"
        return resolve and url.removeprefix("oss://") in self.provider.uploads

    def ds_fetch(self, query: dict[str, list[str]], task_id: str) -> None:
        """`GET /api/v1/tasks/{task_id}`; an unknown id reads UNKNOWN, as on DashScope."""
        if not self.authorized("dashscope"):
            return
        task = self.task(task_id)
        if task is None:
            output = {"task_id": task_id, "task_status": "UNKNOWN"}
            return self._send(200, {"request_id": uuid.uuid4().hex, "output": output})
        self.provider.advance(task)
        self._send(200, self._ds_task(task))

    def _ds_task(self, task: Task) -> dict[str, Any]:
        output: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": task.status,
            "submit_time": _stamp(task.submit_time),
        }
        answer: dict[str, Any] = {"request_id": uuid.uuid4().hex, "output": output}
        if task.status == "SUCCEEDED":
            prompt = task.body["input"].get("prompt", "")
            output.update(end_time=_stamp(time.time()), orig_prompt=prompt)
            output.update(actual_prompt=prompt + " (extended)")
            output["video_url"] = self.provider.result_url(task)
            duration = task.body.get("parameters", {}).get("duration", 5)
            answer["usage"] = {"duration": duration, "video_count": 1, "SR": 720}
        elif task.status == "FAILED" and self.provider.fail_with:
            output["code"], output["message"] = self.provider.fail_with
        return answer

    def ds_cancel(self, query: dict[str, list[str]], task_id: str) -> None:
        """`POST /api/v1/tasks/{task_id}/cancel`."""
        if not self.authorized("dashscope"):
            return
        self.provider.cancels.append(task_id)
        task = self.task(task_id)
        if task is None or task.status not in ("PENDING", "RUNNING"):
            message = "only unfinished tasks can be cancelled"
            return self._send(400, {"code": "UnsupportedOperation", "message": message})
        task.status = "CANCELED"
        self._send(200, {"request_id": uuid.uuid4().hex})

    def ds_policy(self, query: dict[str, list[str]]) -> None:
        """`GET /api/v1/uploads?action=getPolicy&model=…`: a temporary-storage policy."""
        if not self.authorized("dashscope"):
            return
        if query.get("action") != ["getPolicy"] or not query.get("model"):
            return self._send(400, {"code": "InvalidParameter", "message": "bad policy query"})
        self.provider.policies += 1
        policy = {
            "policy": "eyJmYWtlIjogdHJ1ZX0=",
            "signature": "fake-signature",
            "upload_dir": f"dashscope-instant/{uuid.uuid4().hex}/{query['model'][0]}",
            "upload_host": self.provider.origin + "/oss/upload",
            "expire_in_seconds": 300,
            "max_file_size_mb": 100,
            "capacity_limit_mb": 999999,
            "oss_access_key_id": "LTAI-fake",
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }
        self._send(200, {"request_id": uuid.uuid4().hex, "data": policy})

    # OSS ---------------------------------------------------------------------------

    def oss_upload(self, query: dict[str, list[str]]) -> None:
        """The OSS form upload (`POST {upload_host}`)."""
        fields = _multipart(self.headers.get("Content-Type", ""), self.body)
        wanted = {"OSSAccessKeyId": "LTAI-fake", "Signature": "fake-signature"}
        if any(fields.get(name) != value.encode() for name, value in wanted.items()):
            return self._raw(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", "text/xml")
        key = fields.get("key", b"").decode()
        if not key.startswith("dashscope-instant/") or "file" not in fields:
            return self._raw(400, b"<Error><Code>InvalidArgument</Code></Error>", "text/xml")
        if key in self.provider.uploads:
            return self._raw(409, b"<Error><Code>FileAlreadyExists</Code></Error>", "text/xml")
        self.provider.uploads[key] = fields["file"]
        self._raw(200, b"", "text/plain")

    def oss_result(self, query: dict[str, list[str]], task_id: str) -> None:
        """A signed result URL: the MP4 until `Expires`, then 403."""
        expires = float(query.get("Expires", ["0"])[0])
        if time.time() > expires or self.task(task_id) is None:
            return self._raw(403, b"<Error><Code>AccessDenied</Code></Error>", "text/xml")
        self._raw(200, VIDEO, "video/mp4")

    # OpenAI ------------------------------------------------------------------------

    def oa_create(self, query: dict[str, list[str]]) -> None:
        """`POST /v1/videos` (JSON)."""
        if not self.authorized("openai"):
            return
        body = self.json_body()
        if not body.get("model") or not body.get("media"):
            error = {"code": "invalid_request", "message": "model and media are required"}
            return self._send(400, {"error": error})
        task = self.provider.create_task("openai", body, dict(self.headers))
        self._send(200, self._oa_video(task))

    def oa_extend(self, query: dict[str, list[str]]) -> None:
        """`POST /v1/videos/extensions` (multipart); the form is recorded undecoded."""
        if not self.provider.can_extend:
            return self._send(404, {"error": {"code": "not_found", "message": "no route"}})
        if not self.authorized("openai"):
            return
        form = {"content_type": self.headers.get("Content-Type", ""), "raw": self.body}
        task = self.provider.create_task("openai-extend", form, dict(self.headers))
        self._send(200, self._oa_video(task))

    def oa_retrieve(self, query: dict[str, list[str]], video_id: str) -> None:
        """`GET /v1/videos/{id}`."""
        if not self.authorized("openai"):
            return
        task = self.task(video_id)
        if task is None:
            return self._send(404, {"error": {"code": "not_found", "message": "no such video"}})
        self.provider.advance(task)
        self._send(200, self._oa_video(task))

    def oa_content(self, query: dict[str, list[str]], video_id: str) -> None:
        """`GET /v1/videos/{id}/content`."""
        if not self.authorized("openai"):
            return
        task = self.task(video_id)
        if task is None or task.status != "SUCCEEDED":
            error = {"code": "video_not_ready", "message": "the video is not ready"}
            return self._send(400, {"error": error})
        self._raw(200, VIDEO, "video/mp4")

    def oa_cancel(self, query: dict[str, list[str]], video_id: str) -> None:
        """`POST /v1/videos/{id}/cancel`."""
        if not self.authorized("openai"):
            return
        self.provider.cancels.append(video_id)
        task = self.task(video_id)
        if task is None:
            return self._send(404, {"error": {"code": "not_found", "message": "no such video"}})
        if task.status in ("PENDING", "RUNNING"):
            task.status = "CANCELED"
        self._send(200, self._oa_video(task))

    def _oa_video(self, task: Task) -> dict[str, Any]:
        status = _OPENAI_STATUS[task.status]
        video: dict[str, Any] = {
            "id": task.task_id,
            "object": "video",
            "model": task.body.get("model"),
            "status": status,
            "created_at": int(task.submit_time),
            "seconds": task.body.get("seconds"),
            "size": task.body.get("size"),
            "seed": task.body.get("seed"),
            "error": None,
        }
        if self.provider.report_progress:
            progress = {"queued": 0, "completed": 100}.get(status, min(task.polls * 30, 90))
            video["progress"] = progress
        if task.status == "FAILED" and self.provider.fail_with:
            code, message = self.provider.fail_with
            video["error"] = {"code": code, "message": message}
        elif task.status == "CANCELED":
            video["error"] = {"code": "cancelled", "message": "the video was cancelled"}
        return video


_OPENAI_STATUS = {
    "PENDING": "queued",
    "RUNNING": "in_progress",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELED": "failed",
    "UNKNOWN": "unknown",
}

_ROUTES = [
    ("POST", re.compile(r"/api/v1/services/aigc/video-generation/video-synthesis"), "ds_submit"),
    ("GET", re.compile(r"/api/v1/tasks/([^/]+)"), "ds_fetch"),
    ("POST", re.compile(r"/api/v1/tasks/([^/]+)/cancel"), "ds_cancel"),
    ("GET", re.compile(r"/api/v1/uploads"), "ds_policy"),
    ("POST", re.compile(r"/oss/upload"), "oss_upload"),
    ("GET", re.compile(r"/oss/results/([^/]+)\.mp4"), "oss_result"),
    ("POST", re.compile(r"/v1/videos"), "oa_create"),
    ("POST", re.compile(r"/v1/videos/extensions"), "oa_extend"),
    ("GET", re.compile(r"/v1/videos/([^/]+)"), "oa_retrieve"),
    ("GET", re.compile(r"/v1/videos/([^/]+)/content"), "oa_content"),
    ("POST", re.compile(r"/v1/videos/([^/]+)/cancel"), "oa_cancel"),
]


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + ".000"


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = part.get_payload(decode=True) or b""
    return fields
