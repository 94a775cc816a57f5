"""The web app served by real uvicorn on a free loopback port, for every web test to reuse.

    with serve_asgi(app) as base_url: httpx.get(base_url + "/")   # any ASGI app
    def test_x(web): web.get("/healthz")                            # handoff's app, its own DB

`web` serves `create_app()` against a fresh migrated SQLite database and home directory (the
`sqlite_url` fixture), so the link key, uploads and outbox are the test's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.flow.conftest import free_port


@contextmanager
def serve_asgi(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields its base URL; stops it on exit."""
    port = free_port()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Web:
    """A served handoff web app and an HTTP client pointed at it."""

    base_url: str
    client: httpx.Client
    home: Path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)


@pytest.fixture
def web_factory(sqlite_url: str, home: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Callable[..., Web]]:
    """Serve create_app() with optional setting overrides (HANDOFF_PORTAL_* names, lower case
    without the prefix, e.g. portal_max_file_bytes=1000)."""
    from db.settings import get_settings
    from deployments.web.app import create_app

    stack: list[Any] = []

    def start(**overrides: Any) -> Web:
        for name, value in overrides.items():
            monkeypatch.setenv(f"HANDOFF_{name.upper()}", str(value))
        get_settings.cache_clear()
        context = serve_asgi(create_app(get_settings()))
        base_url = context.__enter__()
        client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)
        stack.append((context, client))
        return Web(base_url=base_url, client=client, home=home)

    yield start
    for context, client in reversed(stack):
        client.close()
        context.__exit__(None, None, None)


@pytest.fixture
def web(web_factory: Callable[..., Web]) -> Web:
    """handoff's web app with the default settings, served on loopback."""
    return web_factory()
