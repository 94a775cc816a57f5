"""The client portal under load: the status page and the questionnaire POST at 100 concurrent
clients on loopback, against a floor: the same page rendered, and the same form parsed, by a bare
Starlette handler with no database and no middleware. Both servers are uvicorn in their own
process; the load comes from this one (asyncio, one kept-alive HTTP/1.1 connection per client),
alternating handoff and floor.

Each of the 100 simulated clients has its own onboarding and link, and posts the way its browser
does: the form's action URL (with the CSRF token) read from the questionnaire page it loaded, a
multipart body with the button pressed, and a changed answer every time, so every POST writes
(an unchanged answer would be a read-only save). Afterwards the database must hold one
`intake_saved` event per POST and each client's last answer, or the run fails: a benchmark of
refused or no-op requests measures nothing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.bench.common import OUT, Part, child_json, log, median, p95

CONCURRENCY = 100
SAVES = itertools.count(1)
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

    async def post(request: Request) -> HTMLResponse | RedirectResponse:
        form = await request.form()
        if not form.get("goals"):
            return HTMLResponse("no answer", status_code=400)
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


def _start(argv: list[str], env: dict[str, str], port: int,
           log_path: Path) -> subprocess.Popen[bytes]:
    import httpx

    with log_path.open("wb") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=output,
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


class Connection:
    """One kept-alive HTTP/1.1 connection, held by one simulated client as a browser holds one.

    Deliberately minimal (Content-Length bodies only, which is all these servers send), so the
    load generator is not what gets measured: httpx's pool slows down with many connections
    (here ~240 req/s from one connection, ~50 from 100, against the same bare handler)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, target: str, body: bytes = b"",
                      content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
        """Send one request on the open connection (opening it if needed); the response."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if method != "GET":
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode("latin-1") + b"\r\n" + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionResetError("the server closed the connection")
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise RuntimeError(f"{target}: a response without Content-Length: {headers}")
        data = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), headers, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def multipart(answer: str) -> tuple[bytes, str]:
    """The questionnaire form as a browser posts it: the answer, the button, an empty file."""
    boundary = "----handoffbench7MA4YWxkTrZu0gW"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"goals\"\r\n\r\n{answer}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\nsave\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"logo\"; filename=\"\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n\r\n--{boundary}--\r\n")
    return body.encode(), f"multipart/form-data; boundary={boundary}"


async def _load(urls: list[str], requests: int, post: bool) -> dict[str, Any]:
    """`requests` in all from len(urls) concurrent clients, client i always on urls[i] over its
    own kept-alive connection. A POST saves a new answer each time; returns req/s, p95 and each
    client's last answer."""
    from urllib.parse import urlsplit

    latencies: list[float] = []
    retried: list[str] = []
    last: dict[int, str] = {}
    remaining = requests

    async def worker(index: int, url: str) -> None:
        nonlocal remaining
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        try:
            while remaining > 0:
                remaining -= 1
                sent = f"Grow bookings by a third (save {next(SAVES)})"  # never the same
                body, content_type = multipart(sent) if post else (b"", None)
                started = time.perf_counter()
                for attempt in (1, 2):
                    try:
                        status, headers, data = await connection.request(
                            "POST" if post else "GET", target, body, content_type)
                        break
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        # A kept-alive connection the server closed as we reused it: a browser
                        # sends again on a new one. The same answer again writes nothing new,
                        # so a retried save still counts once in the database check.
                        await connection.close()
                        if attempt == 2:
                            raise
                        retried.append(f"{type(exc).__name__}: {exc}")
                ok = (status == 303 and "saved=1" in headers.get("location", "")) if post \
                    else status == 200
                if not ok:
                    raise RuntimeError(f"{url}: {status} {data[:300]!r}")
                latencies.append(time.perf_counter() - started)
                last[index] = sent
        finally:
            await connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(i, url) for i, url in enumerate(urls)))
    elapsed = time.perf_counter() - began
    return {"rps": len(latencies) / elapsed, "p95_ms": p95(latencies) * 1000,
            "count": len(latencies), "last": last, "retried": retried}


def make_clients(count: str) -> dict[str, list[str]]:
    """`count` onboardings at intake (terms and scope given, as `handoff onboard` records
    them), created in this process (HANDOFF_* from the environment); their link paths."""
    from db.models import utcnow
    from db.playbook import get_playbook
    from db.session import transaction
    from tasks.onboarding import records
    from tasks.portal.links import token_for

    playbook = get_playbook()
    now = utcnow()
    with transaction() as session:
        ids = [records.create_onboarding(session, playbook, records.NewOnboarding.parse(
            client=f"Bench Co {n}", segment="smb", offer="Growth retainer",
            owner="va@northwind.example", backup="va2@northwind.example",
            contacts=[f"pat{n}@bench.example"], closed_at=now, kickoff_by=None,
            first_milestone=None, terms="SOW v2 signed", scope="SEO, 3 months"),
            actor="bench").id for n in range(int(count))]
    return {"paths": [f"/c/{token_for(i, 1)}" for i in ids]}


def recorded(paths_json: str) -> dict[str, Any]:
    """What the POSTs left in the database: `intake_saved` events, and each client's answer."""
    import json

    from sqlalchemy import func, select

    from db.models import Event, IntakeAnswer
    from db.session import transaction

    with transaction() as session:
        saves = int(session.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "intake_saved")) or 0)
        goals: dict[int, Any] = {row.onboarding_id: row.value for row in session.execute(
            select(IntakeAnswer.onboarding_id, IntakeAnswer.value)
            .where(IntakeAnswer.field_key == "goals"))}
    ids = [int(path.removeprefix("/c/").split("-", 1)[0]) for path in json.loads(paths_json)]
    return {"saves": saves, "goals": [goals.get(i) for i in ids]}


def bench_portal(quick: bool) -> dict[str, Any]:
    """Status page and questionnaire POST, handoff vs floor, alternating, medians."""
    import html
    import json

    import httpx

    from tests.web.portal_client import ACTION

    home = OUT / "portal"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port, floor_port = _free_port(), _free_port()
    env = {**os.environ, "HANDOFF_HOME": str(home),
           "HANDOFF_DATABASE_URL": f"sqlite:///{home / 'handoff.db'}",
           "HANDOFF_PORTAL_PORT": str(port), "HANDOFF_PORTAL_GUESS_LIMIT": "1000000",
           "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # a save never wakes a run; no Prefect
    handoff = [str(Path(sys.executable).with_name("handoff"))]
    subprocess.run([*handoff, "db", "upgrade"], env=env, check=True, capture_output=True)
    paths: list[str] = child_json("tests.bench.portal:make_clients", str(CONCURRENCY),
                                  env=env)["paths"]
    servers = [
        _start([sys.executable, "-m", "deployments.web"], env, port, home / "portal.log"),
        _start([sys.executable, "-c", f"from tests.bench.portal import serve_floor; "
                                      f"serve_floor({floor_port})"], env, floor_port,
               home / "floor.log"),
    ]
    ours = f"http://127.0.0.1:{port}"
    floor = f"http://127.0.0.1:{floor_port}"
    try:
        # Each client loads its questionnaire once, as its browser would, and posts to the
        # form's action (the CSRF token is in it, bound to this client's link).
        actions = []
        for path in paths:
            page = httpx.get(f"{ours}{path}/intake", timeout=60)
            page.raise_for_status()
            found = ACTION.search(page.text)
            if found is None:
                raise RuntimeError(f"no form on {path}/intake")
            actions.append(ours + html.unescape(found.group(1)))
        requests, runs = (300, 2) if quick else (2000, 3)
        cases = {
            "status": ([ours + p for p in paths], [f"{floor}/c/x"] * len(paths), False),
            "post": (actions, [f"{floor}/c/x/intake"] * len(paths), True),
        }
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {
            case: {"handoff": [], "floor": []} for case in cases}
        posted, last = 0, {}
        retries = {"handoff": 0, "floor": 0}
        for run in range(runs):
            for case, (handoff_urls, floor_urls, is_post) in cases.items():
                for side, urls in (("handoff", handoff_urls), ("floor", floor_urls)):
                    result = asyncio.run(_load(urls, requests, is_post))
                    if is_post and side == "handoff":
                        posted += result["count"]
                        last.update(result["last"])
                    samples[case][side].append(result)
                    retries[side] += len(result["retried"])
                    log(f"portal {case} {side} run {run + 1}: {result['rps']:.0f} req/s, "
                        f"p95 {result['p95_ms']:.0f} ms"
                        + (f", {len(result['retried'])} sent again after "
                           f"{result['retried'][0]}" if result["retried"] else ""))
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
    check = child_json("tests.bench.portal:recorded", json.dumps(paths), env=env)
    expected = [last.get(i) for i in range(len(paths))]
    if check["saves"] != posted or check["goals"] != expected:
        raise RuntimeError(f"the POSTs did not all record: {posted} answered 303, "
                           f"{check['saves']} intake_saved events; last answers match: "
                           f"{check['goals'] == expected}")
    return {"requests": requests, "runs": runs, "concurrency": CONCURRENCY,
            "recorded_saves": check["saves"], "retries": retries, "results": {
                case: {side: {"rps": median([s["rps"] for s in runs_]),
                              "p95_ms": median([s["p95_ms"] for s in runs_])}
                       for side, runs_ in sides.items()} for case, sides in samples.items()}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table(m: dict[str, Any]) -> list[str]:
    lines = [f"**Client portal** ({m['concurrency']} concurrent clients on loopback, each with "
             f"its own link, {m['requests']} requests per run, uvicorn in its own process, the "
             "load generator (one asyncio process, a kept-alive connection per client) on the same "
             "cores; floor: the same page rendered, or the "
             "same form parsed, by a bare Starlette handler without database or middleware; "
             f"{m['recorded_saves']} saves checked in the database afterwards)", "",
             "| request | handoff req/s | floor req/s | handoff/floor | handoff p95 ms | "
             "floor p95 ms |", "|---|---|---|---|---|---|"]
    labels = {"status": "status page (GET: link checked, page read, two read transactions)",
              "post": "questionnaire save (POST: CSRF token, multipart, a changed answer, one "
                      "write transaction)"}
    for case, label in labels.items():
        ours, floor = m["results"][case]["handoff"], m["results"][case]["floor"]
        lines.append(f"| {label} | {ours['rps']:.0f} | {floor['rps']:.0f} | "
                     f"{ours['rps'] / floor['rps']:.2f}× | {ours['p95_ms']:.0f} | "
                     f"{floor['p95_ms']:.0f} |")
    return lines


PART = Part(name="portal", run=lambda args: bench_portal(args.quick), table=table, order=15)
