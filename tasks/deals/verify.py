"""Is this request really from the provider? Checked on the raw bytes, before any parsing.

Every check fails closed: no configured secret means refused, a missing or malformed header means
refused, and every comparison of a secret-derived value is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from urllib.parse import unquote

MAX_AGE_SECONDS = 300  # HubSpot's documented limit; Stripe's default tolerance; ours for generic


class Unverified(Exception):
    """The request is not proven to come from the provider; the message says why (no secrets)."""


def _secret(secret: str | None, name: str) -> bytes:
    if not secret:
        raise Unverified(f"no {name} configured; refusing every request until it is set")
    return secret.encode()


def _fresh(timestamp: float, now: float | None, tolerance: float) -> None:
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise Unverified(f"timestamp is {age:.0f} s away from now; at most {tolerance:.0f} s")


def _number(value: str | None, header: str) -> float:
    try:
        number = float(value or "")
    except ValueError:
        raise Unverified(f"header {header} is missing or not a number") from None
    if not math.isfinite(number):  # "nan" would pass every age comparison
        raise Unverified(f"header {header} is not a finite number")
    return number


def hubspot(secret: str | None, *, method: str, uri: str | None, body: bytes,
            timestamp: str | None, signature: str | None, now: float | None = None) -> None:
    """HubSpot v3: base64 HMAC-SHA256 of method + URI + body + timestamp (ms), under 5 minutes.

    `uri` is the public URL configured in HubSpot, not what this server sees behind a proxy.
    """
    key = _secret(secret, "HANDOFF_HUBSPOT_CLIENT_SECRET")
    if not uri:
        raise Unverified("no HANDOFF_HUBSPOT_WEBHOOK_URL configured (the URL pasted into HubSpot)")
    millis = _number(timestamp, "X-HubSpot-Request-Timestamp")
    _fresh(millis / 1000, now, MAX_AGE_SECONDS)
    # HubSpot signs the URI with percent-escapes decoded.
    message = method.upper().encode() + unquote(uri).encode() + body + (timestamp or "").encode()
    expected = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, (signature or "").encode()):
        raise Unverified("X-HubSpot-Signature-v3 does not match")


def basic_auth(user: str | None, password: str | None, authorization: str | None) -> None:
    """Pipedrive signs nothing: its webhooks carry the HTTP basic auth set on the webhook."""
    if not user or not password:
        raise Unverified("no HANDOFF_PIPEDRIVE_WEBHOOK_USER/_PASSWORD configured; refusing every "
                         "request until they are set")
    scheme, _, encoded = (authorization or "").partition(" ")
    try:
        given = base64.b64decode(encoded, validate=True) if scheme.lower() == "basic" else b""
    except (binascii.Error, ValueError):
        given = b""
    expected = f"{user}:{password}".encode()
    if not hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest()):
        raise Unverified("basic auth missing or wrong")


def stripe(secret: str | None, *, body: bytes, header: str | None,
           now: float | None = None, tolerance: float = MAX_AGE_SECONDS) -> None:
    """Stripe: `Stripe-Signature: t=…,v1=…` — hex HMAC-SHA256 of "t.body", within the tolerance.

    Any of several v1 signatures may match (Stripe sends two while a secret is being rolled).
    """
    key = _secret(secret, "HANDOFF_STRIPE_WEBHOOK_SECRET")
    parts = [p.split("=", 1) for p in (header or "").split(",") if "=" in p]
    stamps = [v for k, v in parts if k.strip() == "t"]
    signatures = [v.strip().encode() for k, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not signatures:
        raise Unverified("Stripe-Signature header is missing or malformed")
    _fresh(_number(stamps[0], "Stripe-Signature t"), now, tolerance)
    expected = hmac.new(key, stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest().encode()
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise Unverified("Stripe-Signature does not match")


def generic(secret: str | None, *, body: bytes, timestamp: str | None, signature: str | None,
            now: float | None = None) -> None:
    """Our own scheme: `X-Handoff-Signature: sha256=<hex HMAC-SHA256 of "timestamp.body">` and
    `X-Handoff-Timestamp: <unix seconds>`, within 5 minutes."""
    key = _secret(secret, "HANDOFF_GENERIC_WEBHOOK_SECRET")
    _fresh(_number(timestamp, "X-Handoff-Timestamp"), now, MAX_AGE_SECONDS)
    expected = b"sha256=" + hmac.new(key, (timestamp or "").encode() + b"." + body,
                                     hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, (signature or "").encode()):
        raise Unverified("X-Handoff-Signature does not match")


def sign_generic(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers a sender adds (what Zapier/n8n/Make must compute; tests use it too)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {"X-Handoff-Timestamp": str(timestamp),
            "X-Handoff-Signature": f"sha256={digest.hexdigest()}"}
