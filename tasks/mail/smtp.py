"""SMTP delivery through yagmail: one login per batch, each message one transaction, and where
the server offers PIPELINING (RFC 2920) one round-trip a message: each message's content and
final dot go out in one write with the next message's MAIL, RCPT and DATA (`send_all`).

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
  times on ``SMTPServerDisconnected``, which can deliver a message twice.  We drive our own
  ``EmailMessage`` through MAIL, RCPT and DATA on ``.smtp``, exactly once per call.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import smtplib
import socket
import ssl
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

import yagmail

from tasks.mail import envelope
from tasks.mail.message import OutgoingMessage, ascii_domain, build_mime, smtp_data
from tasks.mail.outcomes import (
    SendOutcome,
    SendResult,
    TransportFault,
    classify_error,
    connection_fault,
    decode_reply,
    describe,
    is_connection_error,
)
from tasks.mail.transport import Transport


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


class SmtpTransport(Transport):
    """SMTP transport: one yagmail connection (one login) per batch, reopened at most once.

    Each message is one SMTP transaction whose every reply is read, so every outcome is decided
    by what is known: a refusal at MAIL, RCPT or DATA is followed by RSET before the next
    transaction; a connection lost before the final dot is TRANSIENT (the server discards an
    unfinished message); no reply after the final dot is UNCERTAIN (the server may have taken
    it) and is never re-sent. Where the server offers PIPELINING, MAIL, RCPT and DATA go out in
    one write (`tasks.mail.envelope`), and in a batch (`send_all`) behind the previous
    message's final dot, so a message costs one round-trip; elsewhere one round-trip a command.
    Opening costs at most ``connect_timeout`` per step and happens at most ``1 + max_reopens``
    times per batch, however many messages are waiting.
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
        return self._redact(prefix + describe(exc))

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
            # A message's last segment must not wait for the acknowledgement of the ones before
            # it (Nagle): the server answers only once it has the final dot.
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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

    def open(self) -> None:
        """Open the batch connection; on failure every send reports why, without raising."""
        self._fatal = None
        self._reopens_left = self.max_reopens
        self._open_or_remember("connect failed")

    def close(self) -> None:
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
        if not self._used or smtp.has_extn("pipelining"):
            return True  # a pipelined transaction finds a closed connection at its first reply
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
        results = self.send_all((msg,))
        try:
            return next(results)
        finally:
            results.close()

    def send_all(self, messages: Iterable[OutgoingMessage]) -> Generator[SendResult, None, None]:
        """Send each message at most once, yielding each result as soon as its reply is read.

        Where the server offers PIPELINING, message N's content and final dot go out in one
        write with message N+1's MAIL, RCPT and DATA (RFC 2920 allows the content as the first
        command of a group, DATA as the last), so a message costs one round-trip: the reply to
        N's dot decides N, then N+1's envelope replies are read. N+1's content is written only
        when the caller asks for the result after N's, so the caller can record N before
        anything more is handed over. If the connection dies after N's dot, N is UNCERTAIN and
        N+1 (only its envelope went out) TRANSIENT; the next message reopens. Elsewhere each
        message is one transaction after the other, as `send`.
        """
        source = iter(messages)
        ahead: _Prepared | None = None  # its envelope went out behind the previous dot
        ready: _Prepared | None = None  # built while the previous reply was on its way
        in_flight = False  # a dot or an envelope whose reply is unread
        try:
            while True:
                if ahead is not None:
                    current, written, ahead = ahead, True, None
                else:
                    following = ready or (yield from self._next_prepared(source))
                    if following is None:
                        return
                    current, written, ready = following, False, None
                in_flight = written
                replies = self._envelope(current, written)
                in_flight = not isinstance(replies, SendResult)  # the server awaits the content
                if isinstance(replies, SendResult):
                    yield replies
                    continue
                pipelining = self._yag.smtp.has_extn("pipelining")
                while pipelining and ahead is None:
                    ready = ready or (yield from self._next_prepared(source))
                    if ready is None:
                        break
                    unsendable = self._unsendable(ready)
                    if unsendable is not None:
                        ready = None
                        yield unsendable  # refused before anything of it went out
                    else:
                        ahead, ready = ready, None
                result = self._write_message(current, ahead)
                if result is None:
                    if pipelining and ready is None:
                        ready = yield from self._next_prepared(source)  # while the reply comes
                    result = self._dot_reply(current, replies, ahead)
                in_flight = ahead is not None and self._yag is not None
                yield result
                if ahead is not None and self._yag is None:  # lost with the connection
                    key, message_id, ahead = ahead.key, ahead.message_id, None
                    in_flight = False
                    yield SendResult(key, SendOutcome.TRANSIENT, message_id,
                                     "connection lost before the message was handed over")
        finally:
            if in_flight:  # abandoned with a reply unread: the connection's state is unknown
                self._drop()

    def _next_prepared(self, source: Iterator[OutgoingMessage]
                       ) -> Generator[SendResult, None, _Prepared | None]:
        """The next message of `source` that can be written, yielding each that cannot."""
        for msg in source:
            prepared = self._prepare(msg)
            if isinstance(prepared, _Prepared):
                return prepared
            yield prepared
        return None

    def _prepare(self, msg: OutgoingMessage) -> _Prepared | SendResult:
        """The message as the server will get it, or PERMANENT if it cannot be written."""
        try:
            mime = build_mime(msg)
            recipients = [ascii_domain(rcpt) for rcpt in msg.recipients]
            sender = ascii_domain(self.envelope_sender
                                  or email.utils.parseaddr(mime["From"])[1])
            utf8 = not all(addr.isascii() for addr in (sender, *recipients))
            options = ["SMTPUTF8", "BODY=8BITMIME"] if utf8 else []
            return _Prepared(msg.key, msg.message_id, sender, recipients, options, utf8,
                             smtp_data(mime, utf8=utf8),
                             envelope.commands(sender, options, recipients, utf8))
        except (ValueError, TypeError) as exc:
            return SendResult(msg.key, SendOutcome.PERMANENT, msg.message_id, self._error(exc))

    def _unsendable(self, prepared: _Prepared) -> SendResult | None:
        """PERMANENT for a non-ASCII local part on a server without SMTPUTF8, else None."""
        if not prepared.utf8 or self._yag.smtp.has_extn("smtputf8"):
            return None
        return SendResult(prepared.key, SendOutcome.PERMANENT, prepared.message_id,
                          "an address has a non-ASCII local part and the server does not "
                          "offer SMTPUTF8: " + ", ".join(a for a in prepared.recipients
                                                         if not a.isascii()))

    def _envelope(self, prepared: _Prepared, written: bool) -> list[envelope.Reply] | SendResult:
        """The replies to MAIL, RCPT and DATA (already `written` after the previous dot, else
        written now), or the result of a transaction that ended before the message. A reused
        connection found closed before the first reply is reopened once (the reopen budget
        applies) and the envelope written again: nothing of the message was handed over."""
        key, message_id = prepared.key, prepared.message_id
        for _ in range(2):
            if written:
                reused = True
            else:
                self._ensure_connection()
                if self._fatal is not None:
                    outcome, error, fault = self._fatal
                    return SendResult(key, outcome, message_id, error, fault)
                unsendable = self._unsendable(prepared)
                if unsendable is not None:
                    return unsendable
                reused, self._used = self._used, True
            smtp = self._yag.smtp
            try:
                if not smtp.has_extn("pipelining"):
                    replies: list[envelope.Reply] | None = envelope.step_by_step(
                        smtp, prepared.sender, prepared.options, prepared.recipients)
                elif written:
                    replies = envelope.replies(smtp, prepared.recipients, reused)
                else:
                    replies = envelope.pipelined(smtp, prepared.commands, prepared.recipients,
                                                 reused)
            except (smtplib.SMTPException, OSError, ValueError) as exc:
                # Before the final dot was handed over: the server keeps nothing of it.
                if is_connection_error(exc):
                    self._drop()
                return SendResult(key, classify_error(exc), message_id, self._error(exc))
            if replies is not None:
                refusal = envelope.refusal(prepared.recipients, replies)
                if refusal is not None:
                    return self._refused(key, message_id, *refusal)
                return replies
            self._drop()
            written = False
        raise AssertionError("a new connection is never found stale")

    def _write_message(self, prepared: _Prepared,
                       ahead: _Prepared | None) -> SendResult | None:
        """Hand over the message and its final dot (and `ahead`'s envelope, in the same write);
        None once all of it went out, else what the failed write means."""
        handed, error = _write(self._yag.smtp,
                               prepared.data + (ahead.commands if ahead is not None else b""))
        if error is None:
            return None
        self._drop()
        if handed < len(prepared.data):  # the dot did not go out: the server keeps nothing
            return SendResult(prepared.key, classify_error(error), prepared.message_id,
                              self._error(error))
        return SendResult(prepared.key, SendOutcome.UNCERTAIN, prepared.message_id,
                          self._error(error, "no reply after the message was handed over"))

    def _dot_reply(self, prepared: _Prepared, replies: list[envelope.Reply],
                   ahead: _Prepared | None) -> SendResult:
        """What the reply to the final dot decides; the connection is dropped without one."""
        key, message_id = prepared.key, prepared.message_id
        try:
            code, reply = self._yag.smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            return SendResult(key, SendOutcome.UNCERTAIN, message_id,
                              self._error(exc, "no reply after the message was handed over"))
        if code != 250:
            # The dot ends the transaction whatever its reply (RFC 5321 4.1.1.4); RSET only
            # where no envelope follows, as a stepwise exchange always did.
            return self._refused(key, message_id, "message", code, reply, reset=ahead is None)
        refused = envelope.refused_recipients(prepared.recipients, replies)[0]
        if refused:
            # Accepted for some recipients: a retry would duplicate, so this counts as sent.
            return SendResult(key, SendOutcome.SENT, message_id,
                              self._redact(f"partially refused: {envelope.details(refused)}"))
        return SendResult(key, SendOutcome.SENT, message_id, None)

    def _refused(self, key: str, message_id: str, step: str, code: int,
                 reply: bytes | str, *, reset: bool = True) -> SendResult:
        """A refused transaction: RSET it (or drop the connection), then say what it means."""
        error = self._redact(f"{step} refused: {code} {decode_reply(reply)}")
        if code == 421:  # the server is closing the connection
            self._drop()
        elif reset:
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


@dataclass(frozen=True)
class _Prepared:
    """A message ready for the wire: its envelope, and its content ending with the final dot."""

    key: str
    message_id: str
    sender: str
    recipients: list[str]
    options: list[str]
    utf8: bool
    data: bytes
    commands: bytes  # MAIL, every RCPT and DATA, for a pipelining server


def _write(smtp: smtplib.SMTP, payload: bytes) -> tuple[int, OSError | None]:
    """Hand `payload` to the connection: (bytes handed over, the error that stopped it), so a
    failure is known to have come before or after the final dot."""
    sock = smtp.sock
    if sock is None:
        return 0, smtplib.SMTPServerDisconnected("the connection is closed")
    handed = 0
    try:
        with memoryview(payload) as view:
            while handed < len(payload):
                handed += sock.send(view[handed:])
    except OSError as exc:
        return handed, exc
    return handed, None
