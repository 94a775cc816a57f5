"""The signed plus-address clients reply to: `onboarding+<id>-<signature>@domain`.

Set as Reply-To on every client message when HANDOFF_REPLY_TO (the mailbox's own address) is
configured, so a reply names its onboarding even when the client's mail program drops the
threading headers. The signature (HMAC-SHA256 under HANDOFF_SECRET_KEY) means nobody can file
mail under an onboarding by guessing its number.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

SIGNATURE_CHARS = 16
_TAG = re.compile(rf"^(?P<id>[1-9][0-9]{{0,17}})-(?P<sig>[0-9a-f]{{{SIGNATURE_CHARS}}})$")


def _signature(secret: str, onboarding_id: int) -> str:
    digest = hmac.new(secret.encode(), f"reply-to:{onboarding_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:SIGNATURE_CHARS]


def reply_address(base: str, secret: str, onboarding_id: int) -> str:
    """The Reply-To for one onboarding's client mail, built on the mailbox address `base`."""
    local, _, domain = base.strip().rpartition("@")
    local = local.split("+", 1)[0]
    return f"{local}+{onboarding_id}-{_signature(secret, onboarding_id)}@{domain}"


def onboarding_addressed(base: str, secret: str, addresses: Iterable[str]) -> int | None:
    """The onboarding a message was sent to through its signed reply address, if any."""
    local, _, domain = base.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    for address in addresses:
        their_local, _, their_domain = address.strip().lower().rpartition("@")
        head, plus, tag = their_local.partition("+")
        if not plus or head != local or their_domain != domain:
            continue
        found = _TAG.match(tag)
        if found is None:
            continue
        onboarding_id = int(found["id"])
        if hmac.compare_digest(found["sig"], _signature(secret, onboarding_id)):
            return onboarding_id
    return None
