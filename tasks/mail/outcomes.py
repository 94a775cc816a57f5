"""What became of a message, decided by what is known, and the errors that decide it.

A send never raises for a delivery problem: it returns a `SendResult` whose outcome the outbox
turns into a row's next state, and whose `fault` (a transport problem, not the message's) raises
the transport alarm.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum


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


def classify_error(exc: BaseException) -> SendOutcome:
    """Map an exception met before the final dot to TRANSIENT (4xx, network) or PERMANENT (5xx,
    or a message that cannot be serialised). After the dot, see ``tasks.mail.smtp``."""
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


def is_connection_error(exc: BaseException) -> bool:
    """Return True for disconnects and socket errors (smtplib.SMTPException is an OSError)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def decode_reply(value: bytes | str) -> str:
    """Decode an SMTP reply text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def describe(exc: BaseException) -> str:
    """Return a one-line description of an exception including SMTP codes."""
    name = type(exc).__name__
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        parts = [f"{rcpt}: {code} {decode_reply(text)}"
                 for rcpt, (code, text) in exc.recipients.items()]
        return f"{name}: " + "; ".join(parts)
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{name}: {exc.smtp_code} {decode_reply(exc.smtp_error)}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{name}: timed out"
    return f"{name}: {exc}" if str(exc) else name
