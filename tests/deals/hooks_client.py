"""What a provider does: sign a delivery and POST it. Plus uvicorn serving the app on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from tasks.deals.verify import sign_generic

DATA = Path(__file__).resolve().parents[1] / "data" / "deals"
SECRETS = {"HANDOFF_HUBSPOT_CLIENT_SECRET": "hs-client-secret",
           "HANDOFF_STRIPE_WEBHOOK_SECRET": "whsec_test",
           "HANDOFF_GENERIC_WEBHOOK_SECRET": "generic-k3y",
           "HANDOFF_PIPEDRIVE_WEBHOOK_USER": "pipedrive",
           "HANDOFF_PIPEDRIVE_WEBHOOK_PASSWORD": "correct horse battery"}


def hooks_app() -> object:
    """handoff's whole web app (security middleware, body caps, CSRF with /hooks/ exempt)."""
    from db.settings import get_settings
    from deployments.web.app import create_app

    return create_app(get_settings())


@contextmanager
def serve(app: object) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in this process."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",  # type: ignore[arg-type]
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def body_of(name: str) -> bytes:
    return (DATA / name).read_bytes()


def signed(base_url: str, source: str, body: bytes, *, age: float = 0) -> dict[str, str]:
    """The headers the provider would send with this body."""
    now = time.time() - age
    if source == "hubspot":
        ts = str(int(now * 1000))
        message = b"POST" + f"{base_url}/hooks/hubspot".encode() + body + ts.encode()
        key = SECRETS["HANDOFF_HUBSPOT_CLIENT_SECRET"].encode()
        return {"X-HubSpot-Signature-v3": base64.b64encode(
                    hmac.new(key, message, hashlib.sha256).digest()).decode(),
                "X-HubSpot-Request-Timestamp": ts}
    if source == "pipedrive":
        pair = (f"{SECRETS['HANDOFF_PIPEDRIVE_WEBHOOK_USER']}:"
                f"{SECRETS['HANDOFF_PIPEDRIVE_WEBHOOK_PASSWORD']}")
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    if source == "stripe":
        t = int(now)
        v1 = hmac.new(SECRETS["HANDOFF_STRIPE_WEBHOOK_SECRET"].encode(), f"{t}.".encode() + body,
                      hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={t},v1={v1}"}
    return sign_generic(SECRETS["HANDOFF_GENERIC_WEBHOOK_SECRET"], body, int(now))


def post(base_url: str, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{base_url}/hooks/{source}", content=body, timeout=30,
                      headers={"content-type": "application/json", **headers})
