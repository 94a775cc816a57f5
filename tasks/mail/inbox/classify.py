"""Reading one inbound message: who sent it, what it answers, and what kind of message it is.

Pure functions over the raw bytes. Three kinds, decided in this order:

* bounce: an RFC 3464 delivery-status notification (`multipart/report;
  report-type=delivery-status`) with at least one recipient whose Action is `failed`;
* auto_reply: anything a machine sent on someone's behalf (RFC 3834 `Auto-Submitted` other than
  `no`, `X-Autoreply`, `X-Autorespond`, `Precedence: auto_reply|bulk|junk`, a delay-only DSN,
  a mailer-daemon sender, or a typical out-of-office subject);
* reply: what a person wrote.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from html.parser import HTMLParser
from typing import Literal

Kind = Literal["reply", "auto_reply", "bounce"]

EXCERPT_LINES = 6
EXCERPT_CHARS = 600
AUTO_PRECEDENCE = {"auto_reply", "bulk", "junk"}
# Subjects mail clients and servers give automatic replies (English, German, French, Spanish,
# Dutch, Italian), matched at the start of the subject.
OUT_OF_OFFICE = re.compile(
    r"^\s*(?:(?:re|aw|fw|fwd)\s*:\s*)*(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response)"
    r"|autoreply|out of (?:the )?office|ooo\b|away from (?:the )?office|on vacation|vacation reply"
    r"|abwesenheitsnotiz|abwesend|automatische antwort|réponse automatique|absence"
    r"|respuesta automática|fuera de la oficina|automatisch antwoord|afwezig"
    r"|risposta automatica|fuori ufficio)",
    re.IGNORECASE)
DAEMONS = ("mailer-daemon@", "postmaster@")
# Where a quoted earlier message starts in a reply's text.
QUOTE_START = re.compile(
    r"^(?:on .{4,200} wrote:|am .{4,200} schrieb .{1,200}:|le .{4,200} a écrit ?:"
    r"|-{2,}\s*original message\s*-{2,}|from:\s.+|_{8,})\s*$", re.IGNORECASE)
MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class Bounce:
    """What a delivery-status notification says failed, and which message it returns."""

    recipients: tuple[str, ...]
    status: str
    diagnostic: str
    original_message_id: str | None


@dataclass(frozen=True)
class Inbound:
    """One message from the mailbox, read and classified."""

    uid: int
    message_id: str
    sender: str
    subject: str
    date: dt.datetime | None
    threads: tuple[str, ...]  # In-Reply-To first, then References newest first
    addressed_to: tuple[str, ...]  # To, Cc, Delivered-To, X-Original-To (bare, lower case)
    kind: Kind
    reason: str  # why it was classified so, e.g. "Auto-Submitted: auto-replied"
    excerpt: str = ""
    bounce: Bounce | None = None
    headers: dict[str, str] = field(default_factory=dict)


def read_message(raw: bytes, uid: int) -> Inbound:
    """Parse and classify one message; a malformed message still reads as far as it can."""
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    sender = _address(_header(msg, "From"))
    subject = " ".join(_header(msg, "Subject").split())
    bounce, bounce_reason = _bounce(msg)
    kind: Kind
    if bounce is not None:
        kind, reason = "bounce", bounce_reason
    else:
        auto = bounce_reason or automatic_reason(msg, sender, subject)
        kind, reason = ("auto_reply", auto) if auto else ("reply", "written by a person")
    return Inbound(
        uid=uid, message_id=_message_id(msg, raw), sender=sender, subject=subject,
        date=_date(_header(msg, "Date")), threads=_threads(msg),
        addressed_to=tuple(_addresses(msg, "To", "Cc", "Delivered-To", "X-Original-To")),
        kind=kind, reason=reason, excerpt=excerpt(msg) if kind == "reply" else "",
        bounce=bounce)


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError):  # a header the parser cannot make sense of
        value = msg.get_all(name, failobj=[""])[0] if hasattr(msg, "get_all") else ""
    return str(value or "").strip()


def _address(value: str) -> str:
    return email.utils.parseaddr(value)[1].strip().lower()


def _addresses(msg: Message, *names: str) -> list[str]:
    values = [str(v) for n in names for v in (msg.get_all(n) or [])]
    return [a.strip().lower() for _, a in email.utils.getaddresses(values) if "@" in a]


def _message_id(msg: Message, raw: bytes) -> str:
    found = MESSAGE_ID.findall(_header(msg, "Message-ID"))
    if found:
        return str(found[0])[:255]
    # No Message-ID: the content itself identifies the message, so a re-read finds it again.
    return f"<{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.invalid>"


def _threads(msg: Message) -> tuple[str, ...]:
    replied = MESSAGE_ID.findall(_header(msg, "In-Reply-To"))
    references = list(reversed(MESSAGE_ID.findall(_header(msg, "References"))))
    seen: list[str] = []
    for mid in [*replied, *references]:
        if mid not in seen:
            seen.append(mid)
    return tuple(seen)


def _date(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def automatic_reason(msg: Message, sender: str, subject: str) -> str:
    """Why this message was sent by a machine, or "" when a person wrote it (RFC 3834 first)."""
    auto_submitted = _header(msg, "Auto-Submitted")
    if auto_submitted and auto_submitted.split(";")[0].strip().lower() != "no":
        return f"Auto-Submitted: {auto_submitted}"
    for name in ("X-Autoreply", "X-Autorespond"):
        value = _header(msg, name)
        if msg.get(name) is not None and value.lower() not in ("no", "false", "0"):
            return f"{name}: {value or '(present)'}"
    precedence = _header(msg, "Precedence").lower()
    if precedence in AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    if sender.startswith(DAEMONS):
        return f"sent by {sender}"
    if OUT_OF_OFFICE.search(subject):
        return f"out-of-office subject: {subject[:80]}"
    return ""


def _bounce(msg: Message) -> tuple[Bounce | None, str]:
    """(the bounce, "") for a DSN with a failed recipient; (None, reason) for a delay-only DSN."""
    if msg.get_content_type() != "multipart/report":
        return None, ""
    if str(msg.get_param("report-type", "")).lower() != "delivery-status":
        return None, ""
    status_part = next((p for p in msg.walk()
                        if p.get_content_type() == "message/delivery-status"), None)
    if status_part is None:
        return None, ""
    failed: list[tuple[str, str, str]] = []
    actions: list[str] = []
    for block in _status_blocks(status_part)[1:]:  # the first block is per-message
        action = str(block.get("Action", "")).strip().lower()
        actions.append(action)
        if action != "failed":
            continue
        recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
        address = recipient.split(";", 1)[-1].strip().strip("<>").lower()
        failed.append((address, str(block.get("Status", "")).strip(),
                       " ".join(str(block.get("Diagnostic-Code", "")).split())))
    if not failed:
        return None, f"delivery-status notification ({', '.join(actions) or 'no action'})"
    original = _original_message_id(msg)
    status = failed[0][1]
    diagnostic = "; ".join(f"{a}: {d or s or 'failed'}" for a, s, d in failed)
    return Bounce(recipients=tuple(a for a, _, _ in failed if a), status=status,
                  diagnostic=diagnostic[:1000], original_message_id=original), ""


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser().parsestr(chunk) for chunk in re.split(r"\r?\n\r?\n", text.strip())]


def _original_message_id(msg: Message) -> str | None:
    for part in msg.walk():
        kind = part.get_content_type()
        headers: Message | None = None
        if kind == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            headers = first if isinstance(first, Message) else None
        elif kind == "text/rfc822-headers":
            content = part.get_payload(decode=True)
            text = content.decode("utf-8", "replace") if isinstance(content, bytes) else ""
            headers = HeaderParser().parsestr(text)
        if headers is not None:
            found = MESSAGE_ID.findall(str(headers.get("Message-ID", "")))
            if found:
                return str(found[0])
    return None


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "blockquote"):
            self._skip += 1
        if tag in ("br", "p", "div", "tr", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "blockquote") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def excerpt(msg: Message) -> str:
    """The first lines a person wrote, without the quoted message below them."""
    text = ""
    if isinstance(msg, EmailMessage):
        body = msg.get_body(preferencelist=("plain", "html"))
        if body is not None:
            try:
                content = body.get_content()
            except (LookupError, ValueError, AssertionError):
                content = ""
            if body.get_content_type() == "text/html":
                parser = _Text()
                parser.feed(str(content))
                content = "".join(parser.parts)
            text = str(content)
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        stripped = line.strip()
        if stripped == "--" or QUOTE_START.match(stripped):
            break
        if not stripped or stripped.startswith(">"):
            continue
        lines.append(stripped)
        if len(lines) == EXCERPT_LINES:
            break
    joined = "\n".join(lines)
    return joined if len(joined) <= EXCERPT_CHARS else joined[:EXCERPT_CHARS - 1] + "…"
