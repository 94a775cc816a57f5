"""Reusable in-process loopback SMTP server (aiosmtpd) for tests; no mocks, real sockets.

Usage::

    with LoopbackSmtp() as server:                     # 127.0.0.1, free port
        ...send to server.host / server.port...
        server.messages[0].message["Subject"]

    server.fail_next(451, stage="RCPT", count=2)        # next 2 transactions get 451 on RCPT
    server.fail_next(451, stage="DATA_CMD")             # 451 to the DATA command (before 354)
    server.drop_after_dot = 1                           # take the next message, close, no reply
    server.drop_after_dot_to = {"a@example.org"}        # the same for a message to a@, once
    server.refuse_content = {"b@example.org": 554}      # a message to b@: 554 after its dot
    server.on_content = callback                        # called (server thread) at each dot
    server.commands_after_dot                           # dots followed by the next envelope
    server.greeting_reply = "554 go away"               # refuse at the greeting
    server.offer_smtputf8 = False                       # do not advertise SMTPUTF8
    server.offer_pipelining = False                     # do not advertise PIPELINING (RFC 2920)
    server.greeting_delay = 3.0                         # slow 220 greeting
    server.data_delay = 3.0                             # slow reply to the end of DATA
    server.stop(); server.start()                       # refuse connections, then listen again
    server.drop_connections()                           # server-side close of live sessions
    LoopbackSmtp(username="u", password="p")            # AUTH PLAIN/LOGIN required, no TLS
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# DATA is the reply after the final dot; DATA_CMD the reply to the DATA command itself.
Stage = Literal["MAIL", "RCPT", "DATA_CMD", "DATA"]

# aiosmtpd logs sessions and expected TLS handshake failures; AUTH without TLS is intended.
logging.getLogger("mail.log").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class ReceivedMessage:
    """One message accepted by the loopback server."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    login: str | None


@dataclass
class _FailurePlan:
    """Reply ``code`` at ``stage`` for the next ``remaining`` transactions."""

    code: int
    stage: Stage
    remaining: int
    text: str


class _Handler:
    """aiosmtpd handler hooks delegating to the owning LoopbackSmtp."""

    def __init__(self, owner: LoopbackSmtp) -> None:
        """Remember the owner."""
        self.owner = owner

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str]
    ) -> list[str]:
        """Advertise PIPELINING, as most providers do, unless told not to."""
        session.host_name = hostname
        if self.owner.offer_pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Start a transaction, deciding whether it is one of the next K to fail."""
        plan = self.owner._take_failure()
        envelope.loopback_failure = plan  # type: ignore[attr-defined]
        if plan is not None and plan.stage == "MAIL":
            return f"{plan.code} {plan.text}"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Accept or refuse one recipient."""
        plan: _FailurePlan | None = getattr(envelope, "loopback_failure", None)
        if plan is not None and plan.stage == "RCPT":
            return f"{plan.code} {plan.text}"
        code = self.owner.refuse_recipients.get(address)
        if code is not None:
            return f"{code} recipient {address} refused"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Record the message (unless this transaction must fail) after the optional delay."""
        if self.owner.data_delay:
            await asyncio.sleep(self.owner.data_delay)
        if server._reader._buffer:  # type: ignore[attr-defined]
            # The next transaction's commands came in the same write as this message's final
            # dot: the client pipelines across messages (RFC 2920).
            with self.owner._lock:
                self.owner.commands_after_dot += 1
        if self.owner.on_content is not None:
            self.owner.on_content(envelope)
        plan: _FailurePlan | None = getattr(envelope, "loopback_failure", None)
        if plan is not None and plan.stage == "DATA":
            return f"{plan.code} {plan.text}"
        refused = [self.owner.refuse_content[a] for a in envelope.rcpt_tos
                   if a in self.owner.refuse_content]
        if refused:
            return f"{refused[0]} content refused"
        raw = envelope.original_content or b""
        if self.owner._take_drop_after_dot(envelope.rcpt_tos):
            # The message arrived whole; the connection dies before the 250 reaches the client.
            self._accept(session, envelope, raw)
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            return "250 OK: queued (never seen by the client)"
        self._accept(session, envelope, raw)
        return "250 OK: queued"

    def _accept(self, session: Session, envelope: Envelope, raw: bytes) -> None:
        """Record one accepted message."""
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self.owner._record(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                message=parsed,
                login=login,
            )
        )


class _LoopbackSMTP(SMTP):
    """aiosmtpd protocol that counts connections and can delay its greeting."""

    def __init__(self, owner: LoopbackSmtp, **kwargs: Any) -> None:
        """Attach to the owning LoopbackSmtp."""
        self._owner = owner
        super().__init__(**kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count new TCP connections (not the STARTTLS re-handshake)."""
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self._owner._connected(self)

    def connection_lost(self, error: Exception | None) -> None:
        """Forget the connection."""
        self._owner._disconnected(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        """Optionally sleep before the 220 greeting, or refuse the session at the greeting."""
        if self._owner.greeting_delay:
            await asyncio.sleep(self._owner.greeting_delay)
        if self._owner.greeting_reply:
            await self.push(self._owner.greeting_reply)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    async def smtp_EHLO(self, hostname: str) -> None:  # noqa: N802 - aiosmtpd hook name
        """EHLO, optionally without the SMTPUTF8 extension (a server of the old kind)."""
        self.enable_SMTPUTF8 = self._owner.offer_smtputf8
        await super().smtp_EHLO(hostname)

    async def smtp_NOOP(self, arg: str) -> None:  # noqa: N802 - aiosmtpd hook name
        """Count NOOPs (a round-trip a pipelining client need not spend)."""
        with self._owner._lock:
            self._owner.noops += 1
        await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:  # noqa: N802 - aiosmtpd hook name
        """Count RSETs (a client must send one after a refused transaction)."""
        with self._owner._lock:
            self._owner.rsets += 1
        await super().smtp_RSET(arg)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd hook name
        """Refuse the DATA command itself (before 354) when scripted; else the normal DATA."""
        plan: _FailurePlan | None = getattr(self.envelope, "loopback_failure", None)
        if plan is not None and plan.stage == "DATA_CMD" and self.envelope is not None \
                and self.envelope.rcpt_tos:
            # Like many servers, keep the transaction open: the client must RSET before MAIL.
            await self.push(f"{plan.code} {plan.text}")
            return
        await super().smtp_DATA(arg)


class LoopbackSmtp:
    """Threaded aiosmtpd server on 127.0.0.1 recording every accepted message."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
        starttls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """Configure; ``port=0`` picks a free port on the first ``start()``."""
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls_context = starttls_context
        self.implicit_tls_context = implicit_tls_context
        self.greeting_delay = 0.0
        self.data_delay = 0.0
        self.refuse_recipients: dict[str, int] = {}
        self.auth_failure_message: str | None = None
        self.greeting_reply: str | None = None
        self.offer_smtputf8 = True
        self.offer_pipelining = True
        self.drop_after_dot = 0
        self.drop_after_dot_to: set[str] = set()
        self.refuse_content: dict[str, int] = {}
        self.on_content: Callable[[Envelope], None] | None = None
        self.commands_after_dot = 0
        self.rsets = 0
        self.noops = 0
        self.count_connections = 0
        self.auth_attempts = 0
        self._messages: list[ReceivedMessage] = []
        self._failure: _FailurePlan | None = None
        self._lock = threading.Lock()
        self._live: set[_LoopbackSMTP] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Return True while the server is listening."""
        return self._thread is not None

    def start(self) -> LoopbackSmtp:
        """Start listening (again) on ``host:port`` in a background thread."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                server = loop.run_until_complete(
                    loop.create_server(
                        lambda: self._factory(loop),
                        host=self.host,
                        port=self.port,
                        ssl=self.implicit_tls_context,
                    )
                )
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            try:
                loop.run_forever()
            finally:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.close()

        thread = threading.Thread(target=run, name=f"loopback-smtp-{self.port}", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise TimeoutError("loopback SMTP server did not start")
        if failure:
            thread.join()
            raise failure[0]
        self._loop = loop
        self._thread = thread
        return self

    def stop(self) -> None:
        """Close the listener and every live session; afterwards connections are refused."""
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            for proto in list(self._live):
                if proto.transport is not None:
                    proto.transport.close()
            await server.wait_closed()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(10)
        self._loop = self._thread = self._server = None
        with self._lock:
            self._live.clear()

    def drop_connections(self) -> None:
        """Close every live client connection from the server side, keep listening."""
        loop = self._loop
        if loop is None:
            return

        async def drop() -> None:
            for proto in list(self._live):
                if proto.transport is not None:
                    proto.transport.close()

        asyncio.run_coroutine_threadsafe(drop(), loop).result(5)

    def __enter__(self) -> LoopbackSmtp:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- behaviour switches ------------------------------------------------------------------

    def fail_next(
        self, code: int, *, stage: Stage = "RCPT", count: int = 1, text: str | None = None
    ) -> None:
        """Answer ``code`` at ``stage`` for the next ``count`` transactions."""
        if not 400 <= code <= 599:
            raise ValueError(f"failure code must be 4xx or 5xx, got {code}")
        with self._lock:
            self._failure = _FailurePlan(code, stage, count, text or f"loopback {stage} failure")

    def reset(self) -> None:
        """Forget messages, counters, failures and delays."""
        with self._lock:
            self._messages.clear()
            self._failure = None
            self.count_connections = 0
            self.auth_attempts = 0
            self.rsets = 0
            self.noops = 0
            self.commands_after_dot = 0
        self.greeting_delay = self.data_delay = 0.0
        self.refuse_recipients = {}
        self.auth_failure_message = None
        self.greeting_reply = None
        self.offer_smtputf8 = True
        self.offer_pipelining = True
        self.drop_after_dot = 0
        self.drop_after_dot_to = set()
        self.refuse_content = {}
        self.on_content = None

    # -- inspection --------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Return a snapshot of accepted messages, oldest first."""
        with self._lock:
            return list(self._messages)

    @property
    def live_connections(self) -> int:
        """Return the number of currently open client connections."""
        with self._lock:
            return len(self._live)

    # -- internals -----------------------------------------------------------------------------

    def _factory(self, loop: asyncio.AbstractEventLoop) -> _LoopbackSMTP:
        """Create one protocol instance per connection."""
        kwargs: dict[str, Any] = {
            "handler": _Handler(self),
            "hostname": "loopback.test",
            "enable_SMTPUTF8": True,
            "tls_context": self.starttls_context,
            "loop": loop,
        }
        if self.username is not None:
            kwargs.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=False
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _LoopbackSMTP(self, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Check AUTH PLAIN/LOGIN credentials."""
        with self._lock:
            self.auth_attempts += 1
        ok = (
            isinstance(data, LoginPassword)
            and self.username is not None
            and self.password is not None
            and data.login == self.username.encode()
            and data.password == self.password.encode()
        )
        if ok:
            return AuthResult(success=True, auth_data=data)
        if self.auth_failure_message:
            return AuthResult(success=False, handled=False, message=self.auth_failure_message)
        return AuthResult(success=False, handled=False)

    def _take_failure(self) -> _FailurePlan | None:
        """Consume one transaction from the failure plan."""
        with self._lock:
            plan = self._failure
            if plan is None or plan.remaining <= 0:
                return None
            plan.remaining -= 1
            return plan

    def _take_drop_after_dot(self, recipients: list[str]) -> bool:
        """Consume one scripted drop after the final dot (of the next message, or of the first
        message to an address in ``drop_after_dot_to``)."""
        with self._lock:
            targeted = self.drop_after_dot_to.intersection(recipients)
            if targeted:
                self.drop_after_dot_to -= targeted
                return True
            if self.drop_after_dot <= 0:
                return False
            self.drop_after_dot -= 1
            return True

    def _record(self, message: ReceivedMessage) -> None:
        """Store an accepted message."""
        with self._lock:
            self._messages.append(message)

    def _connected(self, proto: _LoopbackSMTP) -> None:
        """Count a new connection."""
        with self._lock:
            self.count_connections += 1
            self._live.add(proto)

    def _disconnected(self, proto: _LoopbackSMTP) -> None:
        """Forget a closed connection."""
        with self._lock:
            self._live.discard(proto)


def self_signed_tls(
    directory: str | Path | None = None, names: Iterable[str] = ("localhost", "127.0.0.1")
) -> tuple[ssl.SSLContext, Path]:
    """Return (server SSLContext, CA/cert PEM path) for a fresh self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    target = Path(directory or tempfile.mkdtemp(prefix="loopback-tls-"))
    target.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopback-smtp-test")])
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = target / "cert.pem"
    key_path = target / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert_path
