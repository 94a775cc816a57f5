"""Each client's portal link: derived, never stored, rotated by version, revoked in the database.

A link is `<base>/c/<onboarding id>-<mac>`, the mac being 192 bits of
HMAC-SHA256(key, "portal-link|<id>|<version>"). Derived rather than random-and-stored because
every later message (each reminder) must carry the same link: a random token would have to be
kept in the database in a form that can be read back, and then a database dump or backup would
open every client's portal. The key lives outside the database (HANDOFF_PORTAL_SECRET, or a file
generated on first run beside it with mode 0600), so the database alone mints nothing, and no
log line, event or mail header ever contains a token. Rotation bumps the version: every older
link stops working at once. Revocation and expiry are rows in `portal_links`, read on every
request; an expired, revoked, rotated, tampered or other client's link is the same "not found".
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Onboarding, PortalLink, utcnow
from db.playbook import Playbook
from db.settings import Settings, get_settings
from db.validation import GuardrailError
from tasks.onboarding import records

_TOKEN = re.compile(r"^([1-9][0-9]{0,11})-([A-Za-z0-9_-]{32})$")


# -- the key -------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _file_key(path: str) -> bytes:
    target = Path(path)
    try:
        text = target.read_text().strip()
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(32)
        try:
            # O_EXCL: two processes starting at once agree on whichever key was written first.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            text = target.read_text().strip()
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(text + "\n")
    if len(text) < 32:
        raise GuardrailError(f"portal key file {target} is shorter than 32 characters; delete it "
                             "to generate a new one (every client link changes)")
    return text.encode()


def master_key(settings: Settings | None = None) -> bytes:
    """The server's link key: HANDOFF_PORTAL_SECRET, else the generated key file."""
    settings = settings or get_settings()
    if settings.portal_secret is not None:
        secret = settings.portal_secret.get_secret_value()
        if len(secret) < 32:
            raise GuardrailError(
                "HANDOFF_PORTAL_SECRET must be at least 32 characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
        return secret.encode()
    return _file_key(str(settings.portal_secret_path.resolve()))


def purpose_key(purpose: str, settings: Settings | None = None) -> bytes:
    """A key for one use (links, form tokens), so no two uses share a MAC key."""
    return hmac.new(master_key(settings), f"handoff|{purpose}".encode(), hashlib.sha256).digest()


# -- tokens --------------------------------------------------------------------------------


def _mac(onboarding_id: int, version: int, settings: Settings | None = None) -> str:
    digest = hmac.new(purpose_key("portal-link", settings),
                      f"portal-link|{onboarding_id}|{version}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


def token_for(onboarding_id: int, version: int, settings: Settings | None = None) -> str:
    """The link token of this onboarding at this link version."""
    return f"{onboarding_id}-{_mac(onboarding_id, version, settings)}"


def url_for(token: str, settings: Settings | None = None) -> str:
    """The absolute link a client is sent."""
    return f"{(settings or get_settings()).portal_base_url}/c/{token}"


# -- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkState:
    """One client's link as the VA and the portal see it."""

    onboarding_id: int
    version: int
    issued_at: dt.datetime
    revoked_at: dt.datetime | None
    last_opened_at: dt.datetime | None
    expires_at: dt.datetime | None  # None while the onboarding is active: it does not expire
    usable: bool
    url: str

    def as_dict(self) -> dict[str, object]:
        return {"onboarding": self.onboarding_id, "url": self.url if self.usable else None,
                "version": self.version, "issued_at": self.issued_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "last_opened_at": (self.last_opened_at.isoformat()
                                   if self.last_opened_at else None),
                "usable": self.usable}


def expires_at(playbook: Playbook, ob: Onboarding, issued_at: dt.datetime) -> dt.datetime | None:
    """None while the onboarding is active; after it ends, the playbook's days from the later
    of the end and the link's issue (a link rotated after handoff gets its full time)."""
    if ob.status == "active":
        return None
    days = dt.timedelta(days=playbook.portal.link_expires_after_days if playbook.portal else 30)
    ended = ob.ready_at or ob.stage_entered_at
    return max(ended, issued_at) + days


def link_state(session: Session, playbook: Playbook, ob: Onboarding,
               now: dt.datetime | None = None) -> LinkState:
    """The link's version, revocation, expiry and last use; reads only."""
    now = now or utcnow()
    row = session.get(PortalLink, ob.id)
    version = row.version if row else 1
    issued = row.issued_at if row else ob.closed_at
    revoked = row.revoked_at if row else None
    expiry = expires_at(playbook, ob, issued)
    usable = (revoked is None and ob.status != "cancelled"
              and (expiry is None or now < expiry))
    return LinkState(onboarding_id=ob.id, version=version, issued_at=issued, revoked_at=revoked,
                     last_opened_at=row.last_opened_at if row else None, expires_at=expiry,
                     usable=usable, url=url_for(token_for(ob.id, version)))


def link_urls(session: Session, playbook: Playbook,
              onboarding_ids: list[int]) -> dict[int, str | None]:
    """The current link of each onboarding (None when not usable), in two queries: mail uses
    this for every client message, so a sweep's statement count does not grow with clients."""
    if not onboarding_ids:
        return {}
    rows = {r.onboarding_id: r for r in session.scalars(
        select(PortalLink).where(PortalLink.onboarding_id.in_(onboarding_ids)))}
    obs = session.scalars(select(Onboarding).where(Onboarding.id.in_(onboarding_ids)))
    now = utcnow()
    out: dict[int, str | None] = {}
    for ob in obs:
        row = rows.get(ob.id)
        if row is not None and row.revoked_at is not None:
            out[ob.id] = None
            continue
        expiry = expires_at(playbook, ob, row.issued_at if row else ob.closed_at)
        if ob.status == "cancelled" or (expiry is not None and now >= expiry):
            out[ob.id] = None
            continue
        out[ob.id] = url_for(token_for(ob.id, row.version if row else 1))
    return out


def resolve(session: Session, playbook: Playbook, token: str,
            now: dt.datetime | None = None) -> Onboarding | None:
    """The onboarding this token opens, or None for any reason at all (the caller shows one
    "not found" for every case, so a guesser learns nothing about which part was wrong)."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    onboarding_id, mac = int(match.group(1)), match.group(2)
    ob = session.get(Onboarding, onboarding_id)
    row = session.get(PortalLink, onboarding_id) if ob else None
    expected = _mac(onboarding_id, row.version if row else 1)
    if not hmac.compare_digest(mac, expected) or ob is None:
        return None
    state = link_state(session, playbook, ob, now)
    return ob if state.usable else None


def _row_for_update(session: Session, ob: Onboarding) -> PortalLink:
    row = session.get(PortalLink, ob.id, with_for_update=True)
    if row is None:
        row = PortalLink(onboarding_id=ob.id, version=1, issued_at=ob.closed_at)
        session.add(row)
        session.flush()
    return row


def rotate(session: Session, playbook: Playbook, onboarding_id: int, *, by: str,
           at: dt.datetime) -> LinkState:
    """A new link: the version goes up, every older link dies, a revoked link lives again."""
    ob = records.get_onboarding(session, onboarding_id, for_update=True)
    row = _row_for_update(session, ob)
    row.version += 1
    row.issued_at = at
    row.revoked_at = None
    records.log_event(session, "portal_link_rotated", actor=by, onboarding_id=ob.id, at=at,
                      version=row.version)
    session.flush()
    return link_state(session, playbook, ob, at)


def revoke(session: Session, playbook: Playbook, onboarding_id: int, *, by: str,
           at: dt.datetime) -> LinkState:
    """Kill the link now; `rotate` issues a new one. Revoking twice is refused."""
    ob = records.get_onboarding(session, onboarding_id, for_update=True)
    row = _row_for_update(session, ob)
    if row.revoked_at is not None:
        raise GuardrailError(f"the portal link of onboarding {onboarding_id} was already "
                             f"revoked at {row.revoked_at.isoformat()}; "
                             f"'handoff portal link {onboarding_id} --rotate' issues a new one")
    row.revoked_at = at
    records.log_event(session, "portal_link_revoked", actor=by, onboarding_id=ob.id, at=at,
                      version=row.version)
    session.flush()
    return link_state(session, playbook, ob, at)


def mark_opened(session: Session, ob: Onboarding, at: dt.datetime) -> bool:
    """Record that a person's browser used the link (a POST, never a GET); at most once a
    minute, so a busy page does not write on every save."""
    row = _row_for_update(session, ob)
    if row.last_opened_at is not None and at - row.last_opened_at < dt.timedelta(minutes=1):
        return False
    row.last_opened_at = at
    return True
