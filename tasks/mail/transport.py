"""The transport a delivery pass sends through: SMTP (`tasks.mail.smtp`) or, with no SMTP
configured, .eml files. Batch-scoped: enter once, send many (`send`, or `send_all`, which yields
each result as it is known, so SMTP can pipeline one message into the next), exit."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from tasks.mail.message import FILE_POLICY, OutgoingMessage, build_mime
from tasks.mail.outcomes import SendOutcome, SendResult, describe

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


class Transport:
    """A batch-scoped mail transport: `with` opens it once, `send` many times, exit closes it."""

    def __enter__(self) -> Self:
        """Open the transport for a batch."""
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the transport, whatever happened inside the batch."""
        self.close()

    def open(self) -> None:
        """Get ready for a batch (nothing by default)."""

    def close(self) -> None:
        """Let go of what `open` took (nothing by default)."""

    def send(self, msg: OutgoingMessage) -> SendResult:
        """Send one message and report the outcome without raising for delivery errors."""
        raise NotImplementedError

    def send_all(self, messages: Iterable[OutgoingMessage]) -> Iterator[SendResult]:
        """Send each message, yielding each result as soon as it is known (by default one
        `send` after the other); the caller records a result before asking for the next."""
        for msg in messages:
            yield self.send(msg)


def safe_filename(key: str) -> str:
    """Return a filesystem-safe, collision-resistant file stem for an outbox key."""
    safe = _UNSAFE_FILENAME.sub("_", key).lstrip(".")[:120]
    if safe != key or not safe:
        safe = f"{safe}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}"
    return safe


class FileTransport(Transport):
    """Writes each message atomically to ``{directory}/{safe key}.eml`` (no SMTP configured)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Remember the target directory."""
        self.directory = Path(directory)

    def open(self) -> None:
        """Create the target directory."""
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """Return the .eml path used for an outbox key."""
        return self.directory / f"{safe_filename(key)}.eml"

    def send(self, msg: OutgoingMessage) -> SendResult:
        """Write the message (tmp file + fsync + os.replace) and report SENT."""
        message_id = msg.message_id
        try:
            data = build_mime(msg).as_bytes(policy=FILE_POLICY)
        except (ValueError, TypeError) as exc:
            return SendResult(msg.key, SendOutcome.PERMANENT, message_id, describe(exc))
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
            return SendResult(msg.key, SendOutcome.TRANSIENT, message_id, describe(exc))
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
        return SendResult(msg.key, SendOutcome.SENT, message_id, None)
