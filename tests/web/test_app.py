"""The web app's skeleton, served by real uvicorn: security headers, body caps, CSRF, webhooks."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from deployments.web.security import CSP, csrf_valid, issue_csrf
from tests.web.conftest import Web, serve_asgi


def test_every_response_carries_the_security_headers(web: Web) -> None:
    for path in ("/", "/healthz", "/static/portal.css", "/no/such/page", "/c/1-nope"):
        response = web.get(path)
        assert response.headers["content-security-policy"] == CSP, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page = web.get("/").text
    # No third-party asset: every src/href on the page is on this origin.
    assert "http://" not in page and "https://" not in page and "//" not in page.replace(
        "<!doctype", "")


def test_a_post_without_a_form_token_is_refused(web: Web) -> None:
    response = web.post("/c/1-whatever/intake", data={"goals": "x"})
    assert response.status_code == 403
    assert "form token" in response.text
    forged = web.post("/c/1-whatever/intake?csrf=1700000000.AAAA", data={"goals": "x"})
    assert forged.status_code == 403


def test_a_cross_site_post_is_refused_even_with_a_token(web: Web) -> None:
    # The origin checks come before the token: refused whatever the token.
    token = "1.x"
    response = web.post(f"/c/1-x/intake?csrf={token}", data={},
                        headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403 and "cross-site" in response.text
    response = web.post(f"/c/1-x/intake?csrf={token}", data={},
                        headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and "cross-origin" in response.text


def test_form_tokens_are_bound_to_their_page_and_expire() -> None:
    key = b"k" * 32
    token = issue_csrf(key, "/c/1-abc/intake", now=1_000_000)
    assert csrf_valid(key, "/c/1-abc/intake", token, now=1_000_100)
    assert csrf_valid(key, "/c/1-abc/seen", token, now=1_000_100)  # same link, other form
    assert not csrf_valid(key, "/c/2-abc/intake", token, now=1_000_100)  # another link
    assert not csrf_valid(key, "/c/1-abc/intake", token, now=1_000_000 + 2 * 86400)
    assert not csrf_valid(b"x" * 32, "/c/1-abc/intake", token, now=1_000_100)


def _raw_post(base_url: str, path: str, headers: dict[str, str], body: bytes) -> str:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode()
                     + body)
        return sock.recv(4096).decode(errors="replace")


def test_a_body_over_its_cap_is_refused_before_it_is_read(web_factory) -> None:  # type: ignore[no-untyped-def]
    web: Web = web_factory(portal_max_form_bytes=1000)
    # Declared too large: refused from the header alone, the body is never sent.
    reply = _raw_post(web.base_url, "/c/1-x/seen", {"Content-Length": "5000000",
                                                    "Content-Type": "text/plain"}, b"")
    assert reply.startswith("HTTP/1.1 413"), reply


def test_a_chunked_body_is_cut_off_at_the_cap(tmp_path: Path) -> None:
    from deployments.web.security import BodyLimit, BodyLimits

    read: list[int] = []

    async def sink(request: Request) -> PlainTextResponse:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            read.append(total)
        return PlainTextResponse(f"read {total}")

    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    app = Starlette(routes=[Route("/sink", sink, methods=["POST"])],
                    middleware=[Middleware(BodyLimit, limits=BodyLimits(default=10_000))])

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 1000

    with serve_asgi(app) as base_url:
        response = httpx.post(f"{base_url}/sink", content=chunks(), timeout=10)
    assert response.status_code == 413
    assert max(read, default=0) <= 10_000  # the handler never saw more than the cap


def test_webhook_routes_are_exempt_from_csrf_but_still_capped(web: Web) -> None:
    from deployments.web.hooks import MAX_BODY

    # No form token, cross-site: it reaches the hook, which refuses the missing signature.
    unsigned = web.post("/hooks/generic", content=b"{}", headers={"Sec-Fetch-Site": "cross-site"})
    assert unsigned.status_code == 401
    big = web.post("/hooks/generic", content=b"x" * (MAX_BODY + 1))
    assert big.status_code == 413


def test_extra_routes_outside_the_webhook_prefix_need_the_token(sqlite_url: str) -> None:
    from db.settings import get_settings
    from deployments.web.app import create_app

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"got {len(await request.body())}")

    app = create_app(get_settings(), extra_routes=[Route("/echo", echo, methods=["POST"])])
    with serve_asgi(app) as base_url:
        assert httpx.post(f"{base_url}/echo", content=b"{}").status_code == 403
        token = issue_csrf(app.state.form_key, "/echo")
        assert httpx.post(f"{base_url}/echo?csrf={token}", content=b"{}").text == "got 2"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_unsafe_methods_need_the_token_too(web: Web, method: str) -> None:
    assert web.client.request(method, "/c/1-x/intake").status_code == 403
