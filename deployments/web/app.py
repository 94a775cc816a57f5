"""The ASGI app (Starlette): the client portal today, provider webhooks beside it.

    create_app() -> the app, wrapped in the security middleware of deployments/web/security.py

Routes come from one module per concern, each exposing `routes`; this file only composes them.
Every unsafe request needs a CSRF token, except under WEBHOOK_PREFIX: routes mounted there are
called by providers, not browsers, and must verify the provider's signature on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from db.settings import Settings, get_settings
from deployments.web import pages
from deployments.web.security import BodyLimit, BodyLimits, Csrf, GuessLimiter, SecurityHeaders

WEBHOOK_PREFIX = "/hooks/"
STATIC = Path(__file__).resolve().parent / "static"
UPLOAD_PATH = r"/c/[^/]+/intake"  # the only route that takes files


def create_app(settings: Settings | None = None,
               extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The web app with every route and the security middleware around all of them."""
    from deployments.web import hooks, portal
    from tasks.portal.links import purpose_key

    settings = settings or get_settings()
    form_key = purpose_key("csrf", settings)
    routes: list[BaseRoute] = [
        Route("/", pages.home, methods=["GET", "HEAD"]),
        Route("/healthz", pages.health, methods=["GET", "HEAD"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        *portal.routes,
        *hooks.routes,
        *extra_routes,
    ]
    limits = BodyLimits(default=settings.portal_max_form_bytes,
                        rules=((UPLOAD_PATH, settings.portal_max_upload_bytes),
                               (f"{WEBHOOK_PREFIX}.*", hooks.MAX_BODY)))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders,
                       hsts=settings.portal_base_url.startswith("https://")),
            Middleware(BodyLimit, limits=limits),
            Middleware(Csrf, key=form_key, exempt=(WEBHOOK_PREFIX,)),
        ],
        exception_handlers={404: pages.not_found, 405: pages.not_allowed},
    )
    app.state.settings = settings
    app.state.form_key = form_key
    app.state.guesses = GuessLimiter(limit=settings.portal_guess_limit,
                                     window_s=settings.portal_guess_window_s)
    return app
