"""Driving the portal over HTTP as a browser would: follow the page's own form action."""

from __future__ import annotations

import hashlib
import html
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import Base
from db.playbook import Playbook
from db.session import session_factory
from tasks.portal.links import token_for
from tests.factories import new_onboarding

ACTION = re.compile(r'<form method="post" action="([^"]+)"')
SEEN = re.compile(r'data-url="([^"]+)"')

# Everything the shipped questionnaire requires, as a browser would post it.
COMPLETE: dict[str, Any] = {
    "primary_contact_name": "Pat Lee", "primary_contact_email": "pat@acme.example",
    "primary_contact_channel": "Email", "approver_name": "Sam Ortiz",
    "approver_email": "sam@acme.example", "billing_entity": "Acme Dental LLC",
    "billing_address": "1 Main St\nSpringfield", "ap_contact_email": "ap@acme.example",
    "po_required": "no", "goals": "More booked appointments",
    "success_criteria": "40 new patients a month by March", "audience": "Families nearby",
    "access_granted": ["Website CMS", "Analytics"], "access_delegation_confirmed": "yes",
}


def pdf_bytes(pages: int = 1) -> bytes:
    """A small valid PDF."""
    return (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]"
            b"/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n" * pages)


def png_bytes() -> bytes:
    """A valid 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def new_client(db_url: str, playbook: Playbook, **overrides: Any) -> tuple[int, str]:
    """An onboarding and its current link path (/c/<token>)."""
    with session_factory(db_url)() as session:
        onboarding_id = new_onboarding(session, playbook, **overrides)
    return onboarding_id, f"/c/{token_for(onboarding_id, 1)}"


def form_action(client: httpx.Client, page: str) -> str:
    """The questionnaire form's action URL (with its CSRF token), read from the page."""
    response = client.get(page)
    assert response.status_code == 200, response.text[:500]
    match = ACTION.search(response.text)
    assert match, "no form on the page"
    return html.unescape(match.group(1))


def post_intake(client: httpx.Client, link: str, data: dict[str, Any],
                files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
                action: str = "save") -> httpx.Response:
    """Post the questionnaire the way the page's form does (multipart, with the button)."""
    url = form_action(client, f"{link}/intake")
    return client.post(url, data={**data, "action": action}, files=files or [("_none", (
        "", b"", "application/octet-stream"))])


def database_fingerprint(db_url: str, uploads: Path) -> str:
    """A hash of every row of every table and every uploaded file: equal means nothing changed."""
    digest = hashlib.sha256()
    with session_factory(db_url)() as session, session.begin():
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table).order_by(*table.primary_key.columns)):
                digest.update(repr(tuple(row)).encode())
    if uploads.exists():
        for path in sorted(uploads.rglob("*")):
            digest.update(str(path).encode())
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def count(session: Session, sql: str, **params: Any) -> int:
    with session.begin():
        return int(session.execute(text(sql), params).scalar() or 0)
