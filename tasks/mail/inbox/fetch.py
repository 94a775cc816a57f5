"""Reading new messages from the onboarding mailbox over verified TLS, leaving them unread.

The folder is opened read-only (EXAMINE) and bodies are fetched with BODY.PEEK, so the VA's
mailbox looks exactly as it did: nothing is marked read, moved or deleted. Where to start is the
caller's cursor (the folder's UIDVALIDITY and the last UID handled); a folder whose UIDVALIDITY
changed is read again from the start, and the record's unique Message-IDs absorb the repeats.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext

from imap_tools import MailBox, MailBoxStartTls, MailMessage
from imap_tools.errors import MailboxLoginError, UnexpectedCommandStatusError

from db.settings import Settings

BATCH = 100  # messages fetched per FETCH command, and handled per database transaction


class InboxUnavailable(RuntimeError):
    """The mailbox could not be read; the message is one line naming what to check."""


@dataclass(frozen=True)
class MailboxConfig:
    """Where the onboarding mailbox is and how to log in (the password never in repr)."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    folder: str
    ssl: bool
    starttls: bool
    cafile: Path | None
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> MailboxConfig | None:
        """The configured mailbox, or None when HANDOFF_IMAP_HOST is unset."""
        if not settings.imap_host:
            return None
        assert settings.imap_username and settings.imap_password  # checked by Settings
        return cls(host=settings.imap_host, port=settings.imap_port_or_default,
                   username=settings.imap_username,
                   password=settings.imap_password.get_secret_value(),
                   folder=settings.imap_folder, ssl=settings.imap_ssl,
                   starttls=settings.imap_starttls, cafile=settings.imap_cafile,
                   timeout=settings.imap_timeout)

    @property
    def mailbox(self) -> str:
        """The cursor's key: one per account and folder."""
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"

    def tls_context(self) -> SSLContext:
        """Always verifying: the system's CAs, or the private CA file configured."""
        return ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)


@dataclass(frozen=True)
class Fetched:
    """One message as the server holds it."""

    uid: int
    raw: bytes


class _RawMessage(MailMessage):
    """imap-tools' message, keeping the exact bytes the server sent."""

    def __init__(self, fetch_data: list[object]) -> None:
        super().__init__(fetch_data)
        self.raw: bytes = self._get_message_data_parts(fetch_data)[0]


class Mailbox:
    """An open, read-only view of one folder."""

    def __init__(self, box: MailBox | MailBoxStartTls, config: MailboxConfig,
                 uidvalidity: int) -> None:
        self._box = box
        self._config = config
        self.uidvalidity = uidvalidity

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above `last_uid`, oldest first (`N:*` always names the newest: filtered)."""
        found = self._call(lambda: self._box.uids(f"UID {last_uid + 1}:*"), "search")
        return sorted(u for u in (int(x) for x in found) if u > last_uid)

    def fetch(self, uids: list[int]) -> list[Fetched]:
        """These messages' bytes, fetched with BODY.PEEK (nothing is marked read)."""
        if not uids:
            return []
        messages = self._call(lambda: list(self._box.fetch(
            uid_list=[str(u) for u in uids], mark_seen=False, bulk=True)), "fetch")
        return sorted((Fetched(uid=int(m.uid or 0), raw=m.raw) for m in messages
                       if isinstance(m, _RawMessage)), key=lambda f: f.uid)

    def _call(self, action, what: str):  # type: ignore[no-untyped-def]
        try:
            return action()
        except (UnexpectedCommandStatusError, imaplib.IMAP4.error, OSError) as exc:
            raise InboxUnavailable(_describe(self._config, exc, what)) from None


@contextmanager
def open_mailbox(config: MailboxConfig) -> Iterator[Mailbox]:
    """Connect over verified TLS, log in and EXAMINE the folder; InboxUnavailable otherwise."""
    box: MailBox | MailBoxStartTls | None = None
    try:
        if config.ssl:
            box = MailBox(config.host, config.port, timeout=config.timeout,
                          ssl_context=config.tls_context())
        else:
            box = MailBoxStartTls(config.host, config.port, timeout=config.timeout,
                                  ssl_context=config.tls_context())
        box.email_message_class = _RawMessage
        box.login(config.username, config.password, initial_folder=None)
        if not box.folder.exists(config.folder):
            raise InboxUnavailable(f"IMAP folder {config.folder!r} does not exist in "
                                   f"{config.username}@{config.host}; check HANDOFF_IMAP_FOLDER")
        status = box.folder.status(config.folder, ["UIDVALIDITY"])
        box.folder.set(config.folder, readonly=True)
    except InboxUnavailable:
        _close(box)
        raise
    except MailboxLoginError:
        _close(box)
        raise InboxUnavailable(
            f"IMAP login refused for {config.username!r} at {config.host}:{config.port}; check "
            "HANDOFF_IMAP_USERNAME and HANDOFF_IMAP_PASSWORD (Gmail, iCloud, Fastmail and Yahoo "
            "need an app password, not the account's own)") from None
    except (UnexpectedCommandStatusError, imaplib.IMAP4.error, OSError, ValueError) as exc:
        _close(box)
        raise InboxUnavailable(_describe(config, exc, "connect")) from None
    try:
        yield Mailbox(box, config, int(status["UIDVALIDITY"]))
    finally:
        _close(box)


def _close(box: MailBox | MailBoxStartTls | None) -> None:
    if box is None:
        return
    try:
        box.logout()
    except (imaplib.IMAP4.error, OSError):
        try:
            box.client.shutdown()
        except OSError:
            pass


def _describe(config: MailboxConfig, exc: BaseException, what: str) -> str:
    where = f"IMAP {config.host}:{config.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = (f"the server's TLS certificate did not verify ({exc.verify_message}); "
                  "set HANDOFF_IMAP_CAFILE for a private CA")
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused; check HANDOFF_IMAP_HOST/PORT and that the server is up"
    elif isinstance(exc, TimeoutError | socket.timeout):
        reason = f"no answer within {config.timeout:g} s"
    elif isinstance(exc, socket.gaierror):
        reason = f"unknown host ({exc.strerror})"
    elif isinstance(exc, ssl.SSLError):
        reason = (f"TLS failed ({exc.reason or exc}); HANDOFF_IMAP_SSL is for port 993, "
                  "HANDOFF_IMAP_STARTTLS for 143")
    else:
        reason = " ".join(str(exc).split()) or type(exc).__name__
    text = f"{where}: {what} failed: {reason}"
    return text.replace(config.password, "***") if config.password else text
