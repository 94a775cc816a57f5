"""The message itself: validated fields, a deterministic Message-ID, and the MIME tree.

Pure: nothing here talks to a server. Bodies use 7-bit transfer encodings, so a message never
depends on the server's 8BITMIME; headers are RFC 2047 encoded and can never carry CR or LF;
domains are IDNA-encoded so any server takes them.
"""

from __future__ import annotations

import email.generator
import email.policy
import email.utils
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage


class _Policy(email.policy.EmailPolicy):
    """policy.default, minus a folding quirk of CPython < 3.13 (gh-124452's neighbourhood).

    For some unstructured values (a subject containing ``<``, ``;`` or ``&`` past column 78)
    the folder moves the whole value to a continuation line: ``Subject:\n [level 1 ...``.
    That is legal, but RFC 5322 unfolding keeps the folding space, so readers see a subject
    starting with a blank. We put the first continuation line back after the colon.
    """

    def fold(self, name: str, value: str) -> str:
        """Fold as policy.default does, never leaving the field name alone on its line."""
        return self._rejoin(name, super().fold(name, value))

    def fold_binary(self, name: str, value: str) -> bytes:
        """Binary counterpart of ``fold``."""
        folded = super().fold_binary(name, value)
        lone = f"{name}:{self.linesep} ".encode("ascii")
        if folded.startswith(lone):
            return f"{name}: ".encode("ascii") + folded[len(lone):]
        return folded

    def _rejoin(self, name: str, folded: str) -> str:
        lone = f"{name}:{self.linesep} "
        return f"{name}: " + folded[len(lone):] if folded.startswith(lone) else folded


# 7bit transfer encoding for bodies (quoted-printable/base64 for non-ASCII) so the message
# never depends on the server's 8BITMIME support; headers are RFC 2047 encoded as usual.
_POLICY = _Policy(cte_type="7bit")
FILE_POLICY = _POLICY.clone(linesep="\r\n")
_CRLF = re.compile(r"[\r\n]")


def _reject_crlf(name: str, value: str) -> None:
    """Raise ValueError if a header value contains CR or LF (header injection)."""
    if _CRLF.search(value):
        raise ValueError(f"{name} must not contain CR or LF characters: {value!r}")


def _addr_spec(value: str, what: str) -> str:
    """Return the bare address of an RFC 5322 mailbox, or raise ValueError if it has none."""
    _reject_crlf(what, value)
    _, addr = email.utils.parseaddr(value)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{what} is not a valid e-mail address: {value!r}")
    return addr


def _sender_domain(sender: str) -> str:
    """Return the (IDNA-encoded) domain of a sender mailbox."""
    domain = _addr_spec(sender, "sender").rpartition("@")[2]
    try:
        return domain.encode("ascii").decode("ascii")
    except UnicodeEncodeError:
        return domain.encode("idna").decode("ascii")


def message_id_for(key: str, sender: str) -> str:
    """Return the deterministic Message-ID ``<sha256(key)[:32]@sender-domain>``."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{_sender_domain(sender)}>"


@dataclass(frozen=True)
class Attachment:
    """A file attached to a message; with ``inline_cid`` it is an inline part for ``cid:``."""

    filename: str
    content: bytes
    mimetype: str
    inline_cid: str | None = None

    def __post_init__(self) -> None:
        """Validate header-bound fields."""
        _reject_crlf("attachment filename", self.filename)
        maintype, slash, subtype = self.mimetype.partition("/")
        if not slash or not maintype or not subtype or _CRLF.search(self.mimetype):
            raise ValueError(f"attachment mimetype must be 'type/subtype': {self.mimetype!r}")
        if maintype.lower() == "multipart":
            raise ValueError(f"attachment mimetype must not be multipart: {self.mimetype!r}")
        if self.inline_cid is not None:
            _reject_crlf("inline_cid", self.inline_cid)
            if not self.inline_cid.strip("<>"):
                raise ValueError("inline_cid must not be empty")
        if not isinstance(self.content, bytes | bytearray):
            raise TypeError(f"attachment content must be bytes, got {type(self.content).__name__}")


@dataclass(frozen=True)
class OutgoingMessage:
    """One e-mail to send; ``key`` is the outbox idempotency key."""

    key: str
    sender: str
    to: tuple[str, ...]
    subject: str
    html: str
    text: str
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None

    def __post_init__(self) -> None:
        """Normalise sequences to tuples and reject invalid or injectable header values."""
        if isinstance(self.to, str):
            object.__setattr__(self, "to", (self.to,))
        else:
            object.__setattr__(self, "to", tuple(self.to))
        object.__setattr__(self, "attachments", tuple(self.attachments))
        if not self.key:
            raise ValueError("key must not be empty")
        _reject_crlf("subject", self.subject)
        _addr_spec(self.sender, "sender")
        if not self.to:
            raise ValueError("to must contain at least one recipient")
        for rcpt in self.to:
            _addr_spec(rcpt, "recipient")
        if self.reply_to is not None:
            _addr_spec(self.reply_to, "reply_to")

    @property
    def message_id(self) -> str:
        """Return the deterministic Message-ID of this message."""
        return message_id_for(self.key, self.sender)

    @property
    def recipients(self) -> tuple[str, ...]:
        """Return the bare envelope recipient addresses."""
        return tuple(email.utils.parseaddr(rcpt)[1] for rcpt in self.to)


def _multipart(subtype: str, first: EmailMessage) -> EmailMessage:
    """Return a new multipart/{subtype} container whose first part is ``first``."""
    container = EmailMessage(policy=_POLICY)
    container["Content-Type"] = f"multipart/{subtype}"
    if subtype == "related":  # RFC 2387: type= names the root part's content type
        container.set_param("type", first.get_content_type())
    container.attach(first)
    return container


def build_mime(msg: OutgoingMessage) -> EmailMessage:
    """Build mixed(related(alternative(text, html), inline images), attachments) as needed."""
    mime = EmailMessage(policy=_POLICY)
    mime.set_content(msg.text, subtype="plain", charset="utf-8")
    mime.add_alternative(msg.html, subtype="html", charset="utf-8")
    del mime["MIME-Version"]
    inline = [att for att in msg.attachments if att.inline_cid is not None]
    attached = [att for att in msg.attachments if att.inline_cid is None]
    if inline:
        mime = _multipart("related", mime)
        for att in inline:
            maintype, _, subtype = att.mimetype.partition("/")
            mime.add_related(
                bytes(att.content),
                maintype=maintype,
                subtype=subtype,
                cid=f"<{(att.inline_cid or '').strip('<>')}>",
                disposition="inline",
                filename=att.filename,
            )
    for att in attached:
        maintype, _, subtype = att.mimetype.partition("/")
        mime.add_attachment(
            bytes(att.content), maintype=maintype, subtype=subtype, filename=att.filename
        )
    for part in mime.walk():
        del part["MIME-Version"]
    mime["MIME-Version"] = "1.0"
    mime["Date"] = email.utils.format_datetime(datetime.now(UTC))
    mime["Message-ID"] = msg.message_id
    mime["From"] = _mailbox_header(msg.sender)
    mime["To"] = ", ".join(_mailbox_header(rcpt) for rcpt in msg.to)
    if msg.reply_to:
        mime["Reply-To"] = _mailbox_header(msg.reply_to)
    mime["Subject"] = msg.subject
    return mime


def ascii_domain(address: str) -> str:
    """The address with its domain IDNA-encoded (``pat@bücher.example`` ->
    ``pat@xn--bcher-kva.example``), so any server takes it; raises ValueError if it cannot be."""
    local, at, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}{at}{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise ValueError(f"the domain of {address!r} is not a valid internationalised name") \
            from exc


def _mailbox_header(value: str) -> str:
    """A mailbox for a header, its domain IDNA-encoded (a raw UTF-8 domain is not 7-bit safe)."""
    name, addr = email.utils.parseaddr(value)
    return email.utils.formataddr((name, ascii_domain(addr))) if name else ascii_domain(addr)


def smtp_data(mime: EmailMessage, *, utf8: bool) -> bytes:
    """The message as SMTP DATA: CRLF lines, leading dots doubled, ending with the final dot."""
    with io.BytesIO() as buffer:
        generator = email.generator.BytesGenerator(
            buffer, policy=_POLICY.clone(utf8=True) if utf8 else _POLICY)
        generator.flatten(mime, linesep="\r\n")
        data = buffer.getvalue()
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
