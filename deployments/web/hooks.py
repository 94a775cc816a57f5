"""Provider webhooks: POST /hooks/{hubspot,pipedrive,stripe,generic}.

Every request is verified on its raw bytes before a single byte is read as data; a request that
fails verification, or arrives while its secret is not configured, gets 401 and writes nothing.
A verified won deal is committed, answered 200 at once, and its run started after the answer
(best effort: the reconcile flow starts it if Prefect is down). Other events: 200, nothing written.
"""

from __future__ import annotations

import logging

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from db.settings import Settings, get_settings
from db.validation import HandoffError
from tasks.deals import verify
from tasks.deals.crm import CrmUnavailable
from tasks.deals.events import SOURCES, parse_json
from tasks.deals.receive import start_runs, take_deals, wins_in

MAX_BODY = 512 * 1024  # HubSpot batches at most 100 events; Stripe events are a few KiB
log = logging.getLogger(__name__)


class TooLarge(Exception):
    """The body passed MAX_BODY."""


async def _body(request: Request) -> bytes:
    """The raw body, refused as soon as it passes MAX_BODY (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def check(source: str, request: Request, body: bytes, settings: Settings) -> None:
    """Verify the request for its provider; raise verify.Unverified otherwise."""
    headers = request.headers

    def secret(value: object) -> str | None:
        return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]

    if source == "hubspot":
        verify.hubspot(secret(settings.hubspot_client_secret), method=request.method,
                       uri=settings.hubspot_webhook_url, body=body,
                       timestamp=headers.get("x-hubspot-request-timestamp"),
                       signature=headers.get("x-hubspot-signature-v3"))
    elif source == "pipedrive":
        verify.basic_auth(settings.pipedrive_webhook_user,
                          secret(settings.pipedrive_webhook_password),
                          headers.get("authorization"))
    elif source == "stripe":
        verify.stripe(secret(settings.stripe_webhook_secret), body=body,
                      header=headers.get("stripe-signature"))
    else:
        verify.generic(secret(settings.generic_webhook_secret), body=body,
                       timestamp=headers.get("x-handoff-timestamp"),
                       signature=headers.get("x-handoff-signature"))


async def receive(request: Request) -> JSONResponse:
    """One provider delivery."""
    source = request.path_params["source"]
    if source not in SOURCES:
        return JSONResponse({"error": f"unknown source; expected one of {', '.join(SOURCES)}"},
                            status_code=404)
    try:
        body = await _body(request)
    except TooLarge:
        return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, status_code=413)
    except ClientDisconnect:
        return JSONResponse({"error": "client went away"}, status_code=400)
    settings = get_settings()
    try:
        check(source, request, body, settings)
    except verify.Unverified as exc:
        log.warning("refused %s webhook from %s: %s", source,
                    request.client.host if request.client else "?", exc)
        return JSONResponse({"error": "not verified"}, status_code=401)
    try:
        deals = wins_in(source, parse_json(body))
        if not deals:
            return JSONResponse({"ignored": True})
        recorded = await run_in_threadpool(take_deals, deals, via="webhook")
    except HandoffError as exc:
        log.warning("%s webhook: %s", source, exc)
        return JSONResponse({"error": str(exc)}, status_code=422)
    except CrmUnavailable as exc:
        log.warning("%s webhook: %s", source, exc)
        return JSONResponse({"error": "CRM unavailable; retry later"}, status_code=503)
    return JSONResponse(
        {"onboardings": [{"id": r.onboarding_id, "created": r.created} for r in recorded]},
        background=BackgroundTask(start_runs, recorded))


routes = [Route("/hooks/{source}", receive, methods=["POST"])]
