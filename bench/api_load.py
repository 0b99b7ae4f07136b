"""API speed under load: retrieve, list and create against a bare Starlette ceiling.

Run: PYTHONPATH=src .venv/bin/python bench/api_load.py [--duration 5] [--connections 1,10,100]
     [--api-workers 1,2] [--phases idle,render] [--endpoints retrieve,list,create]

Needs `wrk` (Debian: apt-get install wrk) to drive the servers from other processes over
loopback. In one run:
  bare      a bare Starlette app (one uvicorn process) answering the same bytes on the same
            paths (the retrieve object, the list page, the create answer): the ceiling
  wanserve  `wanserve serve --workers 0 --api-workers N` on SQLite with API keys set, for
            each N of --api-workers
Per endpoint and connection count: req/s, p50, p99, non-2xx answers and socket time-outs,
and req/s as a share of the ceiling measured in the same phase:
  retrieve  GET /v1/videos/{id} of a completed job
  list      GET /v1/videos?limit=20 (of more than 20 jobs)
  create    POST /v1/videos, two small data-URL images, 2 s, 720P, quotas off; into a model
            no worker serves, so the created jobs wait and do not load the machine
Phases: `idle` (no worker at all) and `render` (a `wanserve worker` renders a 15 s 1080P
keyframe job the whole time; a new one is started whenever the last one finished).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SINK = "bench-sink"  # a served model no worker serves: created jobs only wait
BARE_APP = """
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

folder = Path(sys.argv[2])
video, page, created = (folder / n for n in ("video.json", "list.json", "created.json"))
bodies = {name: path.read_bytes() for name, path in [("v", video), ("l", page), ("c", created)]}


def answer(key):
    async def endpoint(request):
        await request.body()
        return Response(bodies[key], media_type="application/json")
    return endpoint


app = Starlette(routes=[
    Route("/v1/videos/{video_id}", answer("v")),
    Route("/v1/videos", answer("l"), methods=["GET"]),
    Route("/v1/videos", answer("c"), methods=["POST"]),
])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@dataclass
class Load:
    """What one wrk run measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    timeouts: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def png_data_url(width: int, height: int, color: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def body(model: str, size: str, seconds: int) -> dict[str, object]:
    return {
        "model": model,
        "prompt": "A cat walks from one end of the hallway to the other.",
        "seconds": str(seconds),
        "size": size,
        "media": [
            {"type": "first_frame", "url": png_data_url(320, 240, "red")},
            {"type": "last_frame", "url": png_data_url(320, 240, "blue")},
        ],
    }


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:g} s")


@contextmanager
def running(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wanserve_env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "WANSERVE_DATA_DIR": str(data_dir),
        "WANSERVE_API_KEYS": KEY,
        "WANSERVE_CREATE_RATE": "0",
        "WANSERVE_MAX_UNFINISHED_JOBS": "0",
        "WANSERVE_MODELS": json.dumps({SINK: {"engine": "keyframe"}}),
        "WANSERVE_LOG_LEVEL": "WARNING",
        "WANSERVE_ENCODER_PRESET": "veryfast",
    }


def seed(data_dir: Path, work: Path) -> str:
    """A completed 2 s job (rendered by a worker of its own) and 25 waiting ones; its id."""
    env = wanserve_env(data_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "wanserve.cli", "serve", "--port", str(port)]
    with running([*serve, "--workers", "1"], env, work / "seed.log") as server:
        wait_until_up(f"{url}/healthz", server)
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
            done = http.post("/v1/videos", json=body("wan2.7-i2v", "720P", 2)).json()["id"]
            for _ in range(25):
                http.post("/v1/videos", json=body(SINK, "720P", 2)).raise_for_status()
            while http.get(f"/v1/videos/{done}").json()["status"] not in ("completed", "failed"):
                time.sleep(0.5)
            assert http.get(f"/v1/videos/{done}").json()["status"] == "completed"
            (work / "video.json").write_bytes(http.get(f"/v1/videos/{done}").content)
            (work / "list.json").write_bytes(http.get("/v1/videos?limit=20").content)
            created = http.post("/v1/videos", json=body(SINK, "720P", 2))
            (work / "created.json").write_bytes(created.content)
    return done


class Renderer:
    """Keeps a 15 s 1080P keyframe job rendering in a worker process of its own."""

    def __init__(self, url: str):
        self.url = url
        self.job: str | None = None
        self.started = 0

    def ensure(self) -> None:
        """Wait until a render job is in progress (starting a new one if the last is done)."""
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=60) as http:
            status = http.get(f"/v1/videos/{self.job}").json()["status"] if self.job else None
            if status not in ("queued", "in_progress"):
                made = http.post("/v1/videos", json=body("wan2.7-i2v", "1080P", 15))
                self.job = made.json()["id"]
                self.started += 1
            while http.get(f"/v1/videos/{self.job}").json()["status"] != "in_progress":
                time.sleep(0.1)


SCALE_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    if text == "nan":
        return float("nan")
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * SCALE_MS[unit]


def wrk(url: str, connections: int, duration: float, script: Path | None) -> Load:
    """One wrk run; what it measured."""
    command = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{duration:g}s"]
    command += ["--latency", "--timeout", "2s", "-H", f"Authorization: Bearer {KEY}"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if "99" not in latency:  # nothing answered within the run
        latency = {"50": "nan", "99": "nan"}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    return Load(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        timeouts=int(timeouts.group(1)) if timeouts else 0,
    )


def create_script(work: Path) -> Path:
    script = work / "create.lua"
    payload = json.dumps(body(SINK, "720P", 2))
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(payload)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", default="1,10,100")
    parser.add_argument("--api-workers", default="1,2")
    parser.add_argument("--phases", default="idle,render")
    parser.add_argument("--endpoints", default="retrieve,list,create")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/api_load.py needs wrk (Debian: apt-get install wrk)")
    connections = [int(c) for c in args.connections.split(",")]
    api_workers = [int(n) for n in args.api_workers.split(",")]
    phases = args.phases.split(",")
    endpoints = args.endpoints.split(",")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"wrk {args.duration:g} s per cell, -t min(c,2), --timeout 2s; SQLite, keys set")

    work = Path(tempfile.mkdtemp(prefix="wanserve-api-load-"))
    data_dir = work / "data"
    try:
        video_id = seed(data_dir, work)
        paths = {
            "retrieve": f"/v1/videos/{video_id}",
            "list": "/v1/videos?limit=20",
            "create": "/v1/videos",
        }
        scripts = {"create": create_script(work)}
        env = wanserve_env(data_dir)
        bare_port, ports = free_port(), {n: free_port() for n in api_workers}
        bare_cmd = [sys.executable, "-c", BARE_APP, str(bare_port), str(work)]
        with running(bare_cmd, env, work / "bare.log") as bare:
            wait_until_up(f"http://127.0.0.1:{bare_port}/v1/videos", bare)
            for phase in phases:
                run_phase(
                    phase, args, env, work, bare_port, ports, paths, scripts, connections, endpoints
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_phase(
    phase: str,
    args: argparse.Namespace,
    env: dict[str, str],
    work: Path,
    bare_port: int,
    ports: dict[int, int],
    paths: dict[str, str],
    scripts: dict[str, Path],
    connections: list[int],
    endpoints: list[str],
) -> None:
    """Every endpoint and connection count: the bare ceiling, then each --api-workers."""
    serve = [sys.executable, "-m", "wanserve.cli", "serve", "--workers", "0"]
    worker = [sys.executable, "-m", "wanserve.cli", "worker", "--models", "wan2.7-i2v"]
    servers = {
        n: running(
            [*serve, "--port", str(port), "--api-workers", str(n)], env, work / f"api{n}.log"
        )
        for n, port in ports.items()
    }
    with ExitStack() as stack:
        started = {n: stack.enter_context(server) for n, server in servers.items()}
        for n, process in started.items():
            wait_until_up(f"http://127.0.0.1:{ports[n]}/healthz", process)
        renderer = None
        if phase == "render":
            stack.enter_context(running(worker, env, work / "worker.log"))
            renderer = Renderer(f"http://127.0.0.1:{next(iter(ports.values()))}")
        print(f"\n## {phase}" + (" (a 15 s 1080P keyframe job rendering)" if renderer else ""))
        print("| endpoint | c | server | req/s | p50 ms | p99 ms | non-2xx | time-outs | of bare |")
        print("|---|---|---|---|---|---|---|---|---|")
        for endpoint in endpoints:
            for count in connections:
                cells: list[tuple[str, Load]] = []
                for name, port in [
                    ("bare", bare_port),
                    *((f"api-workers {n}", p) for n, p in ports.items()),
                ]:
                    if renderer:
                        renderer.ensure()
                    url = f"http://127.0.0.1:{port}{paths[endpoint]}"
                    cells.append((name, wrk(url, count, args.duration, scripts.get(endpoint))))
                ceiling = cells[0][1].rps
                for name, load in cells:
                    print(
                        f"| {endpoint} | {count} | {name} | {load.rps:,.0f} | {load.p50_ms:.1f} | "
                        f"{load.p99_ms:.1f} | {load.non_2xx} | {load.timeouts} | "
                        f"{load.rps / ceiling:.0%} |",
                        flush=True,
                    )
        if renderer:
            print(f"(render jobs started during the phase: {renderer.started})")


if __name__ == "__main__":
    main()
