"""The client portal under load: the status page and the questionnaire POST at 100 concurrent
clients on loopback, against a floor: the same page rendered, and the same form parsed, by a bare
Starlette handler with no database and no middleware. Both servers are uvicorn in their own
process; the load comes from this one (asyncio + httpx), alternating handoff and floor."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.bench.common import OUT, Part, log, median

CONCURRENCY = 100
ROOT = Path(__file__).resolve().parents[2]


def floor_app() -> Any:
    """The floor: the status page's template with a fixed context, and a bare form POST."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse
    from starlette.routing import Route

    from tasks.mail.render import render_page

    context = _fixed_context()

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(render_page("portal/status.html", context))

    async def post(request: Request) -> RedirectResponse:
        form = await request.form()
        assert form.get("goals")
        return RedirectResponse("/c/x/intake?saved=1", status_code=303)

    return Starlette(routes=[Route("/c/{token}", page), Route("/c/{token}/intake", post,
                                                               methods=["POST"])])


def _fixed_context() -> dict[str, Any]:
    stages = [{"title": t, "what": "What happens in this step, in the client's words.",
               "state": s} for t, s in (("Getting started", "done"),
                                        ("Getting to know you", "current"), ("Kickoff", "upcoming"),
                                        ("Setting up", "upcoming"), ("Ready", "upcoming"))]
    return {"business": "Northwind Studio", "client": {"name": "Bench Co", "offer": "Growth"},
            "finished": False, "active": True, "stages": stages, "current": stages[1],
            "awaited": ["The completed intake questionnaire"], "due": "Mon 30 Nov 2026, 17:00 EST",
            "next": {"title": "Kickoff"}, "kickoff": None, "first_milestone": None,
            "owner": {"name": "Va", "email": "va@northwind.example"},
            "questionnaire": {"title": "Intake questionnaire", "submitted_at": None,
                              "progress": {"answered": 3, "required": 17, "started": True}},
            "files": [], "urls": {"status": "/c/x", "intake": "/c/x/intake", "files": "/c/x/files",
                                  "save": "/c/x/intake?csrf=1", "seen": "/c/x/seen?csrf=1"},
            "flash": None}


def serve_floor(port: int) -> None:
    """Entry point of the floor's server process."""
    import uvicorn

    uvicorn.run(floor_app(), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, lifespan="off")


def _start(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    import httpx

    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/c/x", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"server on port {port} did not start")


async def _load(url: str, requests: int, post: dict[str, str] | None) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    remaining = requests
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                if post is None:
                    response = await client.get(url)
                    ok = response.status_code == 200
                else:
                    response = await client.post(url, data=post)
                    ok = response.status_code == 303
                if not ok:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {"rps": len(latencies) / elapsed,
            "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000}


def bench_portal(quick: bool) -> dict[str, Any]:
    """Status page and questionnaire POST, handoff vs floor, alternating, medians."""
    import re

    import httpx

    from tests.flow.conftest import free_port
    from tests.web.portal_client import ACTION

    home = OUT / "portal"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port, floor_port = free_port(), free_port()
    env = {**os.environ, "HANDOFF_HOME": str(home),
           "HANDOFF_DATABASE_URL": f"sqlite:///{home / 'handoff.db'}",
           "HANDOFF_PORTAL_PORT": str(port), "HANDOFF_PORTAL_GUESS_LIMIT": "1000000"}
    handoff = [str(Path(sys.executable).with_name("handoff"))]
    subprocess.run([*handoff, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*handoff, "onboard", "--client", "Bench Co", "--segment", "smb", "--offer",
                    "Growth", "--owner", "va@northwind.example", "--backup",
                    "va2@northwind.example", "--contact", "pat@bench.example", "--terms", "SOW",
                    "--scope", "SEO", "--no-flow"], env={**env, "PREFECT_API_URL":
                                                         "http://127.0.0.1:9/api"},
                   check=True, capture_output=True)
    link = subprocess.run([*handoff, "portal", "link", "1"], env=env, check=True,
                          capture_output=True, text=True).stdout.split()[0]
    path = link.split(str(port), 1)[1]
    servers = [
        _start([sys.executable, "-m", "deployments.web"], env, port),
        _start([sys.executable, "-c", f"from tests.bench.portal import serve_floor; "
                                      f"serve_floor({floor_port})"], env, floor_port),
    ]
    try:
        page = httpx.get(f"http://127.0.0.1:{port}{path}/intake", timeout=30).text
        action = re.sub("&amp;", "&", ACTION.search(page).group(1))  # type: ignore[union-attr]
        requests, runs = (300, 2) if quick else (2000, 3)
        cases = {
            "status": (f"http://127.0.0.1:{port}{path}", f"http://127.0.0.1:{floor_port}/c/x",
                       None),
            "post": (f"http://127.0.0.1:{port}{action}",
                     f"http://127.0.0.1:{floor_port}/c/x/intake",
                     {"goals": "Grow bookings by a third", "action": "save"}),
        }
        samples: dict[str, dict[str, list[dict[str, float]]]] = {
            case: {"handoff": [], "floor": []} for case in cases}
        for run in range(runs):
            for case, (ours, floor, form) in cases.items():
                for side, url in (("handoff", ours), ("floor", floor)):
                    result = asyncio.run(_load(url, requests, form))
                    samples[case][side].append(result)
                    log(f"portal {case} {side} run {run + 1}: {result['rps']:.0f} req/s, "
                        f"p95 {result['p95_ms']:.0f} ms")
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
    return {"requests": requests, "runs": runs, "concurrency": CONCURRENCY, "results": {
        case: {side: {"rps": median([s["rps"] for s in runs_]),
                      "p95_ms": median([s["p95_ms"] for s in runs_])}
               for side, runs_ in sides.items()} for case, sides in samples.items()}}


def table(m: dict[str, Any]) -> list[str]:
    lines = [f"**Client portal** ({m['concurrency']} concurrent clients on loopback, "
             f"{m['requests']} requests per run, uvicorn in its own process; floor: the same "
             "page rendered, or the same form parsed, by a bare Starlette handler without "
             "database or middleware)", "",
             "| request | handoff req/s | floor req/s | handoff/floor | handoff p95 ms | "
             "floor p95 ms |", "|---|---|---|---|---|---|"]
    labels = {"status": "status page (GET, link checked, one read transaction)",
              "post": "questionnaire save (POST, form token, one write transaction)"}
    for case, label in labels.items():
        ours, floor = m["results"][case]["handoff"], m["results"][case]["floor"]
        lines.append(f"| {label} | {ours['rps']:.0f} | {floor['rps']:.0f} | "
                     f"{ours['rps'] / floor['rps']:.2f}× | {ours['p95_ms']:.0f} | "
                     f"{floor['p95_ms']:.0f} |")
    return lines


PART = Part(name="portal", run=lambda args: bench_portal(args.quick), table=table, order=15)
