"""Each provider's verification: a valid request passes; any change, staleness or missing secret
is refused, and nothing but the documented construction is accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from tasks.deals import verify

BODY = b'[{"objectId": 2001, "propertyName": "dealstage", "propertyValue": "closedwon"}]'
URI = "https://hooks.northwind.example/hooks/hubspot"
NOW = 1_795_707_000.0


def hubspot_signature(secret: str, body: bytes, ts: str, uri: str = URI) -> str:
    message = b"POST" + uri.encode() + body + ts.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def test_hubspot_accepts_the_documented_signature() -> None:
    ts = str(int(NOW * 1000))
    verify.hubspot("s3cret", method="POST", uri=URI, body=BODY, timestamp=ts,
                   signature=hubspot_signature("s3cret", BODY, ts), now=NOW)


@pytest.mark.parametrize("change", ["body", "uri", "secret", "old", "future", "no-secret",
                                    "no-uri", "no-timestamp", "no-signature"])
def test_hubspot_refuses(change: str) -> None:
    ts = str(int(NOW * 1000))
    signature = hubspot_signature("s3cret", BODY, ts)
    kwargs = dict(method="POST", uri=URI, body=BODY, timestamp=ts, signature=signature, now=NOW)
    secret: str | None = "s3cret"
    if change == "body":
        kwargs["body"] = BODY.replace(b"2001", b"2002")
    elif change == "uri":
        kwargs["uri"] = URI + "/"
    elif change == "secret":
        secret = "other"
    elif change == "old":  # six minutes old, signed correctly
        old = str(int((NOW - 360) * 1000))
        kwargs.update(timestamp=old, signature=hubspot_signature("s3cret", BODY, old))
    elif change == "future":
        late = str(int((NOW + 360) * 1000))
        kwargs.update(timestamp=late, signature=hubspot_signature("s3cret", BODY, late))
    elif change == "no-secret":
        secret = None
    elif change == "no-uri":
        kwargs["uri"] = None
    elif change == "no-timestamp":
        kwargs["timestamp"] = None
    else:
        kwargs["signature"] = None
    with pytest.raises(verify.Unverified):
        verify.hubspot(secret, **kwargs)  # type: ignore[arg-type]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth() -> None:
    verify.basic_auth("pipedrive", "hunter22", basic("pipedrive", "hunter22"))
    for header in (basic("pipedrive", "hunter23"), basic("other", "hunter22"), None, "Basic !!",
                   "Bearer x", basic("pipedrive", "hunter22").lower()):
        with pytest.raises(verify.Unverified):
            verify.basic_auth("pipedrive", "hunter22", header)
    for user, password in ((None, "hunter22"), ("pipedrive", None), ("", "")):
        with pytest.raises(verify.Unverified, match="configured"):
            verify.basic_auth(user, password, basic("", ""))


def stripe_header(secret: str, body: bytes, t: int) -> str:
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={v1},v0=deadbeef"


def test_stripe() -> None:
    t = int(NOW)
    verify.stripe("whsec_x", body=BODY, header=stripe_header("whsec_x", BODY, t), now=NOW)
    # Rolling secrets: a second v1 that matches is enough.
    rolled = stripe_header("whsec_old", BODY, t) + "," + \
        stripe_header("whsec_x", BODY, t).split(",")[1]
    verify.stripe("whsec_x", body=BODY, header=rolled, now=NOW)
    refused = [("whsec_x", BODY + b" ", stripe_header("whsec_x", BODY, t), NOW),
               ("whsec_x", BODY, stripe_header("whsec_x", BODY, t - 360), NOW),
               ("whsec_y", BODY, stripe_header("whsec_x", BODY, t), NOW),
               (None, BODY, stripe_header("whsec_x", BODY, t), NOW),
               ("whsec_x", BODY, "v1=abc", NOW), ("whsec_x", BODY, None, NOW)]
    for secret, body, header, now in refused:
        with pytest.raises(verify.Unverified):
            verify.stripe(secret, body=body, header=header, now=now)


def test_generic_round_trip_and_refusals() -> None:
    t = int(NOW)
    headers = verify.sign_generic("k3y", BODY, t)
    verify.generic("k3y", body=BODY, timestamp=headers["X-Handoff-Timestamp"],
                   signature=headers["X-Handoff-Signature"], now=NOW)
    digest = hmac.new(b"k3y", f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers["X-Handoff-Signature"] == f"sha256={digest}"
    stale = verify.sign_generic("k3y", BODY, t - 360)
    for secret, body, h in (("k3y", BODY.replace(b"2001", b"2091"), headers), ("k3y", BODY, stale),
                            (None, BODY, headers), ("", BODY, headers)):
        with pytest.raises(verify.Unverified):
            verify.generic(secret, body=body, timestamp=h["X-Handoff-Timestamp"],
                           signature=h["X-Handoff-Signature"], now=NOW)


def test_default_clock_is_now() -> None:
    headers = verify.sign_generic("k3y", BODY, int(time.time()))
    verify.generic("k3y", body=BODY, timestamp=headers["X-Handoff-Timestamp"],
                   signature=headers["X-Handoff-Signature"])


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf"])
def test_a_timestamp_that_is_not_finite_is_refused(stamp: str) -> None:
    """A correctly signed request whose timestamp is 'nan' would pass every age comparison."""
    digest = hmac.new(b"k3y", f"{stamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    with pytest.raises(verify.Unverified, match="finite"):
        verify.generic("k3y", body=BODY, timestamp=stamp, signature=f"sha256={digest}", now=NOW)
