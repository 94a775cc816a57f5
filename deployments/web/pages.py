"""Pages from templates/portal/, and those that need no client: home, health, errors."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from db.playbook import get_playbook
from tasks.mail.render import render_page


def render(request: Request, template: str, context: dict[str, Any], status: int = 200,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    """A page from templates/portal/ with the business's name on it."""
    try:
        business = get_playbook().business.name
    except Exception:  # a broken playbook must not turn a 404 into a 500
        business = "Client portal"
    html = render_page(f"portal/{template}", {"business": business, **context})
    return HTMLResponse(html, status_code=status, headers=headers)


async def home(request: Request) -> Response:
    """The bare address says what this is and nothing about anyone."""
    return render(request, "home.html", {})


async def health(request: Request) -> Response:
    """For the reverse proxy and `make run`'s start-up check."""
    return PlainTextResponse("ok\n")


def not_found_page(request: Request) -> HTMLResponse:
    """One page for every unknown, expired, revoked, rotated, tampered or other client's link."""
    return render(request, "not_found.html", {}, status=404)


async def not_found(request: Request, exc: Exception) -> Response:
    return not_found_page(request)


async def not_allowed(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("method not allowed\n", status_code=405)


def too_many(request: Request, wait: float) -> HTMLResponse:
    """Too many unknown links from one address: wait and try again."""
    return render(request, "too_many.html", {"minutes": max(1, round(wait / 60))}, status=429,
                  headers={"Retry-After": str(int(wait))})
