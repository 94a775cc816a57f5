"""What every response and every request of the web app passes through, as plain ASGI middleware.

The web app is the part of handoff that faces the internet, so everything here assumes a hostile
caller: bodies are capped while they stream in (never read whole first), unsafe methods need a
CSRF token bound to the page that issued it (webhook routes are exempt by prefix because they
verify a provider signature instead), and every response carries a strict Content-Security-Policy
with no third-party origin at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_PARAM = "csrf"
CSRF_MAX_AGE_S = 24 * 3600  # a form left open over lunch still saves; a day-old one reloads

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
])
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Links carry their capability in the path: never send it on to another site.
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    (b"x-robots-tag", b"noindex, nofollow"),
)


async def send_plain(send: Send, status: int, text: str,
                     extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A short plain-text response from inside middleware."""
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"), *extra]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds the security headers to every response; HSTS when the public URL is https."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        headers = list(SECURITY_HEADERS)
        if hsts:
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[h for h in self.headers if h[0] not in present]]
                if b"cache-control" not in present:
                    message["headers"].append((b"cache-control", b"no-store"))
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyTooLarge(Exception):
    """A request body went over its cap while streaming in."""


@dataclass(frozen=True)
class BodyLimits:
    """The cap for a request body by path: the first rule whose pattern matches the whole path,
    else the default."""

    default: int
    rules: tuple[tuple[str, int], ...] = ()

    def for_path(self, path: str) -> int:
        for pattern, limit in self.rules:
            if re.fullmatch(pattern, path):
                return limit
        return self.default


class BodyLimit:
    """Refuses a body over its cap with 413: at once from Content-Length, else mid-stream.

    The handler reads the body through the wrapped `receive`, so a client lying about (or not
    sending) Content-Length is cut off after `limit` bytes; nothing reads it whole first.
    """

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await send_plain(send, 413, f"request body over {limit} bytes refused\n",
                             [(b"connection", b"close")])
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body over {limit} bytes refused")
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except BodyTooLarge as exc:
            if not started:
                await send_plain(send, 413, f"{exc}\n", [(b"connection", b"close")])


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


# -- CSRF ----------------------------------------------------------------------------------


def csrf_scope(path: str) -> str:
    """What a token is bound to: the first two path segments (a portal link's page, /c/<token>)."""
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts[:2])


def _csrf_mac(key: bytes, scope: str, issued: int) -> str:
    mac = hmac.new(key, f"csrf|{scope}|{issued}".encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def issue_csrf(key: bytes, path: str, now: float | None = None) -> str:
    """A token for forms on the page at `path`; valid for CSRF_MAX_AGE_S."""
    issued = int(now if now is not None else time.time())
    return f"{issued}.{_csrf_mac(key, csrf_scope(path), issued)}"


def csrf_valid(key: bytes, path: str, token: str, now: float | None = None) -> bool:
    """True when the token was issued by this server for this page, less than a day ago."""
    issued_text, _, mac = token.partition(".")
    if not issued_text.isdigit() or not mac:
        return False
    issued = int(issued_text)
    age = (now if now is not None else time.time()) - issued
    if not (-60 <= age <= CSRF_MAX_AGE_S):
        return False
    return hmac.compare_digest(mac, _csrf_mac(key, csrf_scope(path), issued))


class Csrf:
    """Unsafe methods need a same-site origin and a valid token; `exempt` prefixes skip both.

    The token travels in the form's action URL (`?csrf=…`), not the body, so this middleware
    checks it without buffering or parsing a body (the body stays capped and streamed). Routes
    under an exempt prefix (provider webhooks) must authenticate every request themselves.
    """

    def __init__(self, app: ASGIApp, key: bytes, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.key = key
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS
                or scope["path"].startswith(self.exempt)):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal:
            await send_plain(send, 403, refusal + "\n")
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> str | None:
        site = _header(scope, b"sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin = _header(scope, b"origin")
        host = _header(scope, b"host")
        if origin is not None and origin != "null" and host is not None:
            if origin.split("://", 1)[-1] != host:
                return "cross-origin request refused (Origin does not match Host)"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tokens = query.get(CSRF_PARAM, [])
        if len(tokens) != 1 or not csrf_valid(self.key, scope["path"], tokens[0]):
            return "missing or expired form token: reload the page and send again"
        return None


# -- guessing links ------------------------------------------------------------------------


@dataclass
class GuessLimiter:
    """Counts unknown-link requests per client address; over `limit` in `window_s`, refuse all.

    In memory, per portal process (the portal runs as one process). Behind a reverse proxy the
    address is the client's only when uvicorn trusts the proxy's X-Forwarded-For
    (HANDOFF_PORTAL_* README section), otherwise every client shares the proxy's budget.
    """

    limit: int
    window_s: float
    misses: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, address: str, now: float) -> deque[float]:
        stamps = self.misses.setdefault(address, deque())
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        if not stamps:
            self.misses.pop(address, None)
            stamps = self.misses.setdefault(address, deque())
        return stamps

    def blocked(self, address: str, now: float | None = None) -> float:
        """Seconds until this address may try again; 0 when it may now."""
        now = now if now is not None else time.monotonic()
        stamps = self._recent(address, now)
        if len(stamps) < self.limit:
            return 0.0
        return max(1.0, stamps[0] + self.window_s - now)

    def miss(self, address: str, now: float | None = None) -> None:
        """Count one unknown, expired or revoked link from this address."""
        now = now if now is not None else time.monotonic()
        self._recent(address, now).append(now)
        if len(self.misses) > 100_000:  # a flood of addresses: forget the oldest
            self.misses.pop(next(iter(self.misses)))
