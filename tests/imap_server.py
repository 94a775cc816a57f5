"""A real IMAP server on loopback for tests: Dovecot from Debian, self-contained and unprivileged.

Usage::

    with LoopbackImap() as server:               # 127.0.0.1, free ports, its own temp dir
        account = server.add_user()                # a passwd-file user with a maildir
        server.append(account, raw_bytes)          # real IMAP APPEND
        server.flags(account)                      # {uid: flags}, read with BODY.PEEK / FLAGS

Everything lives in one temporary directory: the config file, the TLS certificate (self-signed,
generated here; clients verify it with ``ssl.create_default_context(cafile=server.cafile)``),
the passwd file, the maildirs, the sockets and the log. Dovecot runs in the foreground (no
systemd, no system config) as the calling user, or as ``nobody`` when the tests run as root, so
the instance never holds privileges. ``ensure_dovecot()`` installs Debian's ``dovecot-imapd``
on a fresh machine (root), and under ``CI=true`` a missing server is a failure, never a skip.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from imap_tools import MailBox, MailBoxStartTls

from tests.smtp_server import self_signed_tls

DOVECOT = Path("/usr/sbin/dovecot")
POOL_SIZE = 48  # accounts written before start; tests take one each
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", "dovecot-imapd"]


class ImapUnavailable(RuntimeError):
    """Dovecot is not installed and could not be installed here."""


def ensure_dovecot() -> Path:
    """The dovecot binary, installing Debian's dovecot-imapd first when root and it is missing."""
    if DOVECOT.exists():
        return DOVECOT
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ImapUnavailable(f"{DOVECOT} is missing; install it: apt-get install dovecot-imapd")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # The package's postinst must not start a system-wide instance (no init system is assumed).
    env["RUNLEVEL"] = "1"
    if subprocess.run(APT, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        result = subprocess.run(APT, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ImapUnavailable(f"apt-get install dovecot-imapd failed: {result.stderr[-500:]}")
    return DOVECOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ImapAccount:
    """One mailbox user on the loopback server."""

    username: str
    password: str


CONFIG = """\
# A self-contained Dovecot for tests: nothing outside {root} is read or written.
base_dir = {root}/run
state_dir = {root}/state
instance_name = handoff-test-{port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{root}/tls/cert.pem
ssl_key = <{root}/tls/key.pem
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
disable_plaintext_auth = yes
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mail_uid = {user}
mail_gid = {group}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = home={root}/mail/%u
}}
service imap-login {{
  chroot =
  user = {user}
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    user = {user}
  }}
  unix_listener stats-writer {{
    user = {user}
  }}
}}
"""


class LoopbackImap:
    """A Dovecot instance on loopback: STARTTLS on ``port``, implicit TLS on ``ssl_port``."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.binary = ensure_dovecot()
        self.root = Path(tempfile.mkdtemp(prefix="handoff-dovecot-"))
        self.port = _free_port()
        self.ssl_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._pool: list[ImapAccount] = []
        # Never root: as root the instance runs as nobody, which then owns its directory.
        self.run_as = pwd.getpwuid(os.geteuid()) if os.geteuid() else pwd.getpwnam("nobody")

    @property
    def cafile(self) -> Path:
        """The self-signed certificate clients must trust to verify the server."""
        return self.root / "tls" / "cert.pem"

    @property
    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def env(self, account: ImapAccount, folder: str = "INBOX") -> dict[str, str]:
        """The HANDOFF_IMAP_* settings for one account here (STARTTLS, verified)."""
        return {"HANDOFF_IMAP_HOST": self.host, "HANDOFF_IMAP_PORT": str(self.port),
                "HANDOFF_IMAP_USERNAME": account.username,
                "HANDOFF_IMAP_PASSWORD": account.password, "HANDOFF_IMAP_FOLDER": folder,
                "HANDOFF_IMAP_SSL": "false", "HANDOFF_IMAP_STARTTLS": "true",
                "HANDOFF_IMAP_CAFILE": str(self.cafile), "HANDOFF_IMAP_TIMEOUT": "10"}

    def tls_context(self) -> ssl.SSLContext:
        """A verifying client context for this server."""
        return ssl.create_default_context(cafile=str(self.cafile))

    def __enter__(self) -> LoopbackImap:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self) -> None:
        """Write the config (first time), start Dovecot in the foreground, wait for the ports."""
        config = self.root / "dovecot.conf"
        if not config.exists():
            self._lay_out(config)
        drop = ({"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
                if os.geteuid() == 0 else {})
        self.process = subprocess.Popen(
            [str(self.binary), "-F", "-c", str(config)], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True, **drop)  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if \
                    self.process.stderr else ""
                raise RuntimeError(f"dovecot exited: {err}\n{self.log[-2000:]}")
            if all(self._listening(p) for p in (self.port, self.ssl_port)):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not listen on {self.port}/{self.ssl_port}: {self.log}")

    def stop(self) -> None:
        """Stop the instance (connections are refused until start() again)."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=5)
        self.process = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._listening(self.port):
            time.sleep(0.1)

    def _listening(self, port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((self.host, port)) == 0

    def _lay_out(self, config: Path) -> None:
        for sub in ("run", "state", "mail", "tls"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self_signed_tls(self.root / "tls", names=("localhost", "127.0.0.1"))
        (self.root / "users").write_text("")
        self._pool = self._write_users(POOL_SIZE)
        group = _group_name(self.run_as.pw_gid)
        config.write_text(CONFIG.format(root=self.root, port=self.port, ssl_port=self.ssl_port,
                                        user=self.run_as.pw_name, group=group))
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)
        os.chmod(self.root, 0o700)

    def add_user(self, password: str | None = None) -> ImapAccount:
        """A mailbox user of its own for one test (from the pool written before start)."""
        if self._pool and password is None:
            return self._pool.pop()
        account = self._write_users(1, password)[0]
        # Dovecot looks at the passwd file at most once a second: let it see the new line.
        time.sleep(1.1)
        return account

    def _write_users(self, count: int, password: str | None = None) -> list[ImapAccount]:
        accounts = [ImapAccount(f"u{secrets.token_hex(4)}", password or secrets.token_urlsafe(12))
                    for _ in range(count)]
        with (self.root / "users").open("a") as fh:
            for account in accounts:
                fh.write(f"{account.username}:{{PLAIN}}{account.password}::::::\n")
        return accounts

    def connect(self, account: ImapAccount, folder: str = "INBOX") -> MailBox:
        """A logged-in, verified STARTTLS client (the caller closes it with logout())."""
        box = MailBoxStartTls(self.host, self.port, ssl_context=self.tls_context(), timeout=10)
        box.login(account.username, account.password, initial_folder=folder)
        return box

    def ssl_client(self, account: ImapAccount, folder: str = "INBOX") -> MailBox:
        box = MailBox(self.host, self.ssl_port, ssl_context=self.tls_context(), timeout=10)
        box.login(account.username, account.password, initial_folder=folder)
        return box

    def append(self, account: ImapAccount, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver a message the way a mail client files one: IMAP APPEND, no flags."""
        box = self.connect(account, folder=None)  # type: ignore[arg-type]
        try:
            if not box.folder.exists(folder):
                box.folder.create(folder)
            box.append(raw, folder, flag_set=())
        finally:
            box.logout()

    def flags(self, account: ImapAccount, folder: str = "INBOX") -> dict[int, tuple[str, ...]]:
        """Each message's flags, read without touching them."""
        box = self.connect(account, folder)
        try:
            return {int(m.uid or 0): m.flags for m in box.fetch(mark_seen=False, headers_only=True)}
        finally:
            box.logout()

    def uidvalidity(self, account: ImapAccount, folder: str = "INBOX") -> int:
        box = self.connect(account, folder=None)  # type: ignore[arg-type]
        try:
            return int(box.folder.status(folder, ["UIDVALIDITY"])["UIDVALIDITY"])
        finally:
            box.logout()

    def recreate_folder(self, account: ImapAccount, folder: str) -> None:
        """Delete and create a folder again: the server gives it a new UIDVALIDITY."""
        box = self.connect(account, folder=None)  # type: ignore[arg-type]
        try:
            box.folder.delete(folder)
            box.folder.create(folder)
        finally:
            box.logout()


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name
