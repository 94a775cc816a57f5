"""Pure e-mail transport: MIME building, SMTP delivery through yagmail, and a file fallback.

Facts about yagmail 0.15 (``yagmail/sender.py``) this module relies on:

* ``yagmail.SMTP(user, password, host, port, smtp_starttls, smtp_ssl, smtp_skip_login,
  soft_email_validation, **kwargs)`` stores ``**kwargs`` and passes them verbatim to
  ``smtplib.SMTP(host, port, **kwargs)`` / ``smtplib.SMTP_SSL(host, port, **kwargs)``.  So
  ``timeout=`` becomes the smtplib socket timeout, and ``context=`` is accepted only with
  ``smtp_ssl=True`` (``smtplib.SMTP`` has no ``context`` parameter).
* ``smtp_ssl`` defaults to ``True``; we always pass it explicitly.
* ``smtp_starttls`` may be a dict: yagmail then calls ``smtp.starttls(**smtp_starttls)``, so
  ``{"context": ctx}`` gives STARTTLS a verifying context.  Without it smtplib's
  ``starttls()``/``SMTP_SSL`` would use ``ssl._create_stdlib_context()``, which does NOT
  verify certificates.
* ``SMTP.login()`` opens the connection (connect, EHLO, STARTTLS, EHLO, AUTH) and stores it
  as ``.smtp`` (a plain ``smtplib.SMTP``); it does not send anything.
* A string ``user`` without ``@`` gets ``"@gmail.com"`` appended; a one-entry dict
  ``{user: alias}`` is taken verbatim, so we pass the username as ``{username: username}``
  and disable ``soft_email_validation`` (it rejects non-address usernames such as ``apikey``).
* ``password=None`` makes yagmail ask the keyring / prompt on a TTY; we never pass ``None``
  unless ``smtp_skip_login=True`` (and a username without a password is a config error).
* ``SMTP.send()`` is not used: it builds its own MIME (first content string only, HTML as the
  text part, Message-ID derived from From/To/Subject) and retries ``sendmail`` up to three
  times on ``SMTPServerDisconnected``, which can deliver a message twice.  We send our own
  ``EmailMessage`` with ``.smtp.send_message`` exactly once per call.
"""

from __future__ import annotations

import base64
import contextlib
import email.generator
import email.policy
import email.utils
import hashlib
import io
import os
import re
import smtplib
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from enum import StrEnum
from pathlib import Path
from ssl import SSLContext
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import yagmail

__all__ = [
    "Attachment",
    "FileTransport",
    "OutgoingMessage",
    "SendOutcome",
    "SendResult",
    "SmtpConfig",
    "SmtpTransport",
    "Transport",
    "TransportFault",
    "ascii_domain",
    "connection_fault",
    "build_mime",
    "classify_error",
    "message_id_for",
]



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
_FILE_POLICY = _POLICY.clone(linesep="\r\n")
_CRLF = re.compile(r"[\r\n]")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


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


class SendOutcome(StrEnum):
    """Delivery outcome as recorded by the outbox, decided by what is known about the message."""

    SENT = "sent"  # the server answered 250 after the final dot
    TRANSIENT = "transient"  # not delivered (4xx, or the connection failed before the dot)
    PERMANENT = "permanent"  # refused for this message (5xx to its recipients or content)
    UNCERTAIN = "uncertain"  # handed over whole, no reply: maybe delivered; never re-sent
    HELD = "held"  # not attempted: the server refuses us (login, sender, TLS); see `fault`


class TransportFault(StrEnum):
    """Why a whole delivery pass could not hand mail over: the transport's problem, not the
    message's. The outbox raises the transport alarm for it."""

    AUTH = "auth"  # the server refused the login (535 and other 5xx to AUTH)
    REFUSED = "refused"  # 5xx at the greeting, EHLO, STARTTLS or MAIL FROM
    TLS = "tls"  # the server's certificate did not verify
    UNREACHABLE = "unreachable"  # no connection, no greeting, or a 4xx before any message


@dataclass(frozen=True)
class SendResult:
    """Result of one send; ``error`` is a redacted description (never the password)."""

    key: str
    outcome: SendOutcome
    message_id: str
    error: str | None
    fault: TransportFault | None = None


@dataclass(frozen=True)
class SmtpConfig:
    """SMTP connection settings; ``sender`` is the envelope sender (MAIL FROM / bounces)."""

    host: str
    port: int = 587
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    ssl: bool = False
    verify_tls: bool = True
    timeout: float = 30.0  # waiting for one reply once connected (the reply after the dot too)
    connect_timeout: float = 10.0  # TCP connect, greeting, EHLO, STARTTLS and AUTH, each
    sender: str = field(kw_only=True)

    def __post_init__(self) -> None:
        """Reject configurations that would make yagmail fall back to keyring/prompting."""
        if not self.host:
            raise ValueError("SMTP host must not be empty")
        if self.username and self.password is None:
            raise ValueError("SMTP username given without a password")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError(f"SMTP timeouts must be positive, got {self.timeout!r} and "
                             f"{self.connect_timeout!r}")

    def __repr__(self) -> str:
        """Return a repr with the password masked."""
        secret = "'***'" if self.password is not None else "None"
        return (
            f"SmtpConfig(host={self.host!r}, port={self.port!r}, username={self.username!r}, "
            f"password={secret}, starttls={self.starttls!r}, ssl={self.ssl!r}, "
            f"verify_tls={self.verify_tls!r}, timeout={self.timeout!r}, "
            f"connect_timeout={self.connect_timeout!r}, sender={self.sender!r})"
        )

    __str__ = __repr__

    @property
    def login_required(self) -> bool:
        """Return True when AUTH should be performed."""
        return bool(self.username)

    def tls_context(self) -> SSLContext:
        """Return the client TLS context (verifying unless ``verify_tls`` is False)."""
        ctx = ssl.create_default_context()
        if not self.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


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


def classify_error(exc: BaseException) -> SendOutcome:
    """Map an exception met before the final dot to TRANSIENT (4xx, network) or PERMANENT (5xx,
    or a message that cannot be serialised). After the dot, see ``SmtpTransport._transact``."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(code >= 500 for code in codes):
            return SendOutcome.PERMANENT
        return SendOutcome.TRANSIENT
    if isinstance(exc, smtplib.SMTPResponseException):
        return SendOutcome.PERMANENT if exc.smtp_code >= 500 else SendOutcome.TRANSIENT
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SendOutcome.PERMANENT  # e.g. SMTPUTF8 address on a server without SMTPUTF8
    if isinstance(exc, OSError):
        return SendOutcome.TRANSIENT  # disconnect, refused, reset, timeout, TLS failure
    if isinstance(exc, ValueError):
        return SendOutcome.PERMANENT  # the message itself cannot be serialised
    return SendOutcome.TRANSIENT


def connection_fault(exc: BaseException) -> tuple[SendOutcome, TransportFault]:
    """Classify a failure to open the connection (connect, greeting, EHLO, STARTTLS, AUTH).

    A refusal (5xx, bad credentials, an unverifiable certificate) will not heal by retrying,
    so mail is held rather than spending its attempts; anything else is transient.
    """
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SendOutcome.TRANSIENT, TransportFault.UNREACHABLE  # incl. no greeting in time
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        if exc.smtp_code >= 500:
            return SendOutcome.HELD, TransportFault.AUTH
        return SendOutcome.TRANSIENT, TransportFault.UNREACHABLE  # 454: try again later
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SendOutcome.HELD, TransportFault.TLS
    if isinstance(exc, smtplib.SMTPResponseException):
        if exc.smtp_code >= 500:
            return SendOutcome.HELD, TransportFault.REFUSED
        return SendOutcome.TRANSIENT, TransportFault.UNREACHABLE
    if isinstance(exc, smtplib.SMTPException | ValueError):
        # STARTTLS or AUTH not offered, no common AUTH mechanism, a bad TLS setting.
        return SendOutcome.HELD, TransportFault.REFUSED
    return SendOutcome.TRANSIENT, TransportFault.UNREACHABLE


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


def _is_connection_error(exc: BaseException) -> bool:
    """Return True for disconnects and socket errors (smtplib.SMTPException is an OSError)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def _decode(value: bytes | str) -> str:
    """Decode an SMTP reply text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    """Return a one-line description of an exception including SMTP codes."""
    name = type(exc).__name__
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        parts = [f"{rcpt}: {code} {_decode(text)}" for rcpt, (code, text) in exc.recipients.items()]
        return f"{name}: " + "; ".join(parts)
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{name}: {exc.smtp_code} {_decode(exc.smtp_error)}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{name}: timed out"
    return f"{name}: {exc}" if str(exc) else name


def _flatten(mime: EmailMessage, *, utf8: bool) -> bytes:
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


@runtime_checkable
class Transport(Protocol):
    """A batch-scoped mail transport: enter once, send many, exit."""

    def __enter__(self) -> Transport:
        """Open the transport for a batch."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the transport."""
        ...

    def send(self, msg: OutgoingMessage) -> SendResult:
        """Send one message and report the outcome without raising for delivery errors."""
        ...


class SmtpTransport:
    """SMTP transport: one yagmail connection (one login) per batch, reopened at most once.

    Each message is one SMTP transaction driven step by step, so every outcome is decided by
    what is known: a refusal at MAIL, RCPT or DATA is followed by RSET before the next
    transaction; a connection lost before the final dot is TRANSIENT (the server discards an
    unfinished message); no reply after the final dot is UNCERTAIN (the server may have taken
    it) and is never re-sent. Opening costs at most ``connect_timeout`` per step and happens at
    most ``1 + max_reopens`` times per batch, however many messages are waiting.
    """

    def __init__(self, config: SmtpConfig, *, max_reopens: int = 1) -> None:
        """Store the configuration; nothing is opened until ``__enter__``."""
        self.config = config
        self.max_reopens = max_reopens
        self.connections_opened = 0
        self._yag: Any = None
        self._fatal: tuple[SendOutcome, str, TransportFault] | None = None
        self._reopens_left = max_reopens
        self._used = False
        self._secrets = self._secret_forms(config)

    @staticmethod
    def _secret_forms(config: SmtpConfig) -> tuple[str, ...]:
        """Return the password and its base64 AUTH encodings, for redaction."""
        pw = config.password
        if not pw:
            return ()
        user = config.username or ""
        raw = pw.encode("utf-8")
        forms = {
            pw,
            base64.b64encode(raw).decode("ascii"),
            base64.b64encode(f"\0{user}\0{pw}".encode()).decode("ascii"),
            base64.b64encode(f"{user}\0{user}\0{pw}".encode()).decode("ascii"),
        }
        return tuple(sorted(forms, key=len, reverse=True))

    def _redact(self, text: str) -> str:
        """Remove every form of the password from ``text``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, exc: BaseException, context: str = "") -> str:
        """Return a redacted error description."""
        prefix = f"{context}: " if context else ""
        return self._redact(prefix + _describe(exc))

    @property
    def envelope_sender(self) -> str:
        """Return the bare MAIL FROM address from the config."""
        return email.utils.parseaddr(self.config.sender)[1]

    def _new_yag(self) -> Any:
        """Create (without connecting) a yagmail.SMTP object for this config."""
        cfg = self.config
        kwargs: dict[str, Any] = {"timeout": cfg.connect_timeout}
        if cfg.ssl:
            kwargs["context"] = cfg.tls_context()
            starttls: bool | dict[str, Any] = False
        elif cfg.starttls:
            starttls = {"context": cfg.tls_context()}
        else:
            starttls = False
        login_name = cfg.username if cfg.login_required else self.envelope_sender
        yag = yagmail.SMTP(
            user={login_name or "": login_name or ""},
            password=cfg.password if cfg.login_required else None,
            host=cfg.host,
            port=cfg.port,
            smtp_starttls=starttls,
            smtp_ssl=cfg.ssl,
            smtp_skip_login=not cfg.login_required,
            soft_email_validation=False,
            **kwargs,
        )
        yag.set_logging(None)
        return yag

    def _open(self) -> None:
        """Connect, STARTTLS and log in once (short timeouts); raises on failure."""
        yag = self._new_yag()
        try:
            yag.login()
            smtp = yag.smtp
            smtp.ehlo_or_helo_if_needed()
            smtp.timeout = self.config.timeout  # from here on: waiting for replies
            smtp.sock.settimeout(self.config.timeout)
        except BaseException:
            self._discard(yag)
            raise
        self._yag = yag
        self._used = False
        self.connections_opened += 1

    @staticmethod
    def _discard(yag: Any) -> None:
        """Close a yagmail connection without QUIT, ignoring errors."""
        if yag is None:
            return
        yag.is_closed = True
        smtp = getattr(yag, "smtp", None)
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.close()

    def _drop(self) -> None:
        """Forget the current connection (its state is unknown); the next send reopens."""
        self._discard(self._yag)
        self._yag = None

    def _open_or_remember(self, context: str) -> None:
        """Open a connection; on failure remember why, for every later send of this batch."""
        try:
            self._open()
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            outcome, fault = connection_fault(exc)
            self._fatal = (outcome, self._error(exc, context), fault)

    def __enter__(self) -> SmtpTransport:
        """Open the batch connection; on failure every send reports why, without raising."""
        self._fatal = None
        self._reopens_left = self.max_reopens
        self._open_or_remember("connect failed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Send QUIT and close the connection."""
        yag, self._yag = self._yag, None
        if yag is None:
            return
        yag.is_closed = True
        smtp = getattr(yag, "smtp", None)
        if smtp is None:
            return
        try:
            smtp.quit()
        except Exception:
            self._discard(yag)

    def _alive(self) -> bool:
        """Return True if the current connection answers NOOP."""
        smtp = getattr(self._yag, "smtp", None)
        if smtp is None or getattr(smtp, "sock", None) is None:
            return False
        if not self._used:
            return True
        try:
            code, _ = smtp.noop()
        except (smtplib.SMTPException, OSError):
            return False
        return code == 250

    def _ensure_connection(self) -> None:
        """Make sure a live connection exists, reopening once if needed (else ``_fatal``)."""
        if self._fatal is not None:
            return
        if self._yag is not None and self._alive():
            return
        self._drop()
        if self._reopens_left <= 0:
            self._fatal = (SendOutcome.TRANSIENT, "connection lost and reopen budget exhausted",
                           TransportFault.UNREACHABLE)
            return
        self._reopens_left -= 1
        self._open_or_remember("reconnect failed")

    def send(self, msg: OutgoingMessage) -> SendResult:
        """Send one message at most once over the batch connection and classify the result."""
        message_id = msg.message_id
        try:
            mime = build_mime(msg)
            recipients = [ascii_domain(rcpt) for rcpt in msg.recipients]
        except (ValueError, TypeError) as exc:
            return SendResult(msg.key, SendOutcome.PERMANENT, message_id, self._error(exc))
        self._ensure_connection()
        if self._fatal is not None:
            outcome, error, fault = self._fatal
            return SendResult(msg.key, outcome, message_id, error, fault)
        self._used = True
        return self._transact(msg.key, message_id, mime, recipients)

    def _refused(self, key: str, message_id: str, step: str, code: int,
                 reply: bytes | str) -> SendResult:
        """A refused transaction: RSET it (or drop the connection), then say what it means."""
        error = self._redact(f"{step} refused: {code} {_decode(reply)}")
        if code == 421:  # the server is closing the connection
            self._drop()
        else:
            try:
                self._yag.smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
        if step == "MAIL FROM" and code >= 500:
            # The envelope sender is refused (or login is required): no message will pass.
            self._fatal = (SendOutcome.HELD, error, TransportFault.REFUSED)
            return SendResult(key, SendOutcome.HELD, message_id, error, TransportFault.REFUSED)
        outcome = SendOutcome.PERMANENT if code >= 500 else SendOutcome.TRANSIENT
        return SendResult(key, outcome, message_id, error)

    def _transact(self, key: str, message_id: str, mime: EmailMessage,
                  recipients: list[str]) -> SendResult:
        """MAIL, RCPT, DATA, the message, the final dot; each reply decides what happens."""
        smtp = self._yag.smtp
        sender = ascii_domain(self.envelope_sender or email.utils.parseaddr(mime["From"])[1])
        utf8 = not all(addr.isascii() for addr in (sender, *recipients))
        if utf8 and not smtp.has_extn("smtputf8"):
            return SendResult(key, SendOutcome.PERMANENT, message_id,
                              "an address has a non-ASCII local part and the server does not "
                              "offer SMTPUTF8: " + ", ".join(a for a in recipients
                                                             if not a.isascii()))
        try:
            data = _flatten(mime, utf8=utf8)
            code, reply = smtp.mail(sender, ["SMTPUTF8", "BODY=8BITMIME"] if utf8 else [])
            if code != 250:
                return self._refused(key, message_id, "MAIL FROM", code, reply)
            refused: dict[str, tuple[int, bytes]] = {}
            for rcpt in recipients:
                code, reply = smtp.rcpt(rcpt)
                if code == 421:
                    return self._refused(key, message_id, f"RCPT TO {rcpt}", code, reply)
                if code not in (250, 251):
                    refused[rcpt] = (code, reply)
            if len(refused) == len(recipients):
                codes = [c for c, _ in refused.values()]
                worst = min(codes) if any(c < 500 for c in codes) else codes[0]
                details = "; ".join(f"{r}: {c} {_decode(t)}" for r, (c, t) in refused.items())
                return self._refused(key, message_id, "RCPT TO", worst,
                                     details.split(": ", 1)[1] if len(refused) == 1 else details)
            code, reply = smtp.docmd("DATA")
            if code != 354:
                return self._refused(key, message_id, "DATA", code, reply)
            smtp.send(data)
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            # Before the final dot was handed over: the server keeps nothing of it.
            if _is_connection_error(exc):
                self._drop()
            return SendResult(key, classify_error(exc), message_id, self._error(exc))
        try:
            code, reply = smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            return SendResult(key, SendOutcome.UNCERTAIN, message_id,
                              self._error(exc, "no reply after the message was handed over"))
        if code != 250:
            return self._refused(key, message_id, "message", code, reply)
        if refused:
            # Accepted for some recipients: a retry would duplicate, so this counts as sent.
            details = "; ".join(f"{r}: {c} {_decode(t)}" for r, (c, t) in refused.items())
            return SendResult(key, SendOutcome.SENT, message_id,
                              self._redact(f"partially refused: {details}"))
        return SendResult(key, SendOutcome.SENT, message_id, None)


def safe_filename(key: str) -> str:
    """Return a filesystem-safe, collision-resistant file stem for an outbox key."""
    safe = _UNSAFE_FILENAME.sub("_", key).lstrip(".")[:120]
    if safe != key or not safe:
        safe = f"{safe}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}"
    return safe


class FileTransport:
    """Writes each message atomically to ``{directory}/{safe key}.eml`` (no SMTP configured)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Remember the target directory."""
        self.directory = Path(directory)

    def __enter__(self) -> FileTransport:
        """Create the target directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Nothing to close."""

    def path_for(self, key: str) -> Path:
        """Return the .eml path used for an outbox key."""
        return self.directory / f"{safe_filename(key)}.eml"

    def send(self, msg: OutgoingMessage) -> SendResult:
        """Write the message (tmp file + fsync + os.replace) and report SENT."""
        message_id = msg.message_id
        try:
            data = build_mime(msg).as_bytes(policy=_FILE_POLICY)
        except (ValueError, TypeError) as exc:
            return SendResult(msg.key, SendOutcome.PERMANENT, message_id, _describe(exc))
        target = self.path_for(msg.key)
        tmp_name: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(
                dir=self.directory, prefix=f".{target.stem}.", suffix=".tmp"
            )
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, target)
            tmp_name = None
        except OSError as exc:
            return SendResult(msg.key, SendOutcome.TRANSIENT, message_id, _describe(exc))
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
        return SendResult(msg.key, SendOutcome.SENT, message_id, None)
