"""Shared fixtures: an isolated home per test, and the app database on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from tasks.prefect.offline import stay_offline
from tests.imap_server import ImapAccount, LoopbackImap
from tests.smtp_server import LoopbackSmtp

# The machine is offline and Prefect must never phone home, in any test process.
stay_offline()

PG_ADMIN_URL = os.environ.get("HANDOFF_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


@contextmanager
def pg_database_pair(prefix: str) -> Iterator[tuple[str, str]]:
    """A fresh Prefect database (asyncpg URL) and app database (psycopg URL) on PostgreSQL,
    dropped afterwards: the scale-out set-up, for its flow test and its bench."""
    from db.session import dispose_all

    suffix = uuid.uuid4().hex[:10]
    names = (f"prefect_{prefix}_{suffix}", f"handoff_{prefix}_{suffix}")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield base.replace("+psycopg", "+asyncpg") + f"/{names[0]}", f"{base}/{names[1]}"
    finally:
        dispose_all()
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def warm_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One warm CLI process per test process, as `make run` serves one: the suite's `handoff`
    calls run in children forked from it, the way a VA's do (tests/cli/test_warm.py checks that
    a command run warm is the command run cold, and tests the cold fallback). Set
    HANDOFF_TEST_COLD_CLI=1 to run every call cold."""
    import subprocess
    import sys
    import time

    from deployments.door import SOCKET_ENV

    if os.environ.get("HANDOFF_TEST_COLD_CLI") or not sys.platform.startswith("linux"):
        yield
        return
    log = tmp_path_factory.mktemp("warm-cli") / "warm.log"
    name = f"suite-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen([sys.executable, "-m", "deployments.warm"],
                               cwd=Path(__file__).resolve().parents[1],
                               env={**os.environ, SOCKET_ENV: name}, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "ready" not in log.read_text() and process.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    os.environ[SOCKET_ENV] = name  # every subprocess the tests start inherits it
    try:
        yield
    finally:
        os.environ.pop(SOCKET_ENV, None)
        process.terminate()
        process.wait(30)


# The longest test files, longest first. `make test` hands whole files to two workers in
# collection order; started first, the long ones overlap the many short ones instead of running
# alone at the end (longest-processing-time-first). Measured in CI's --durations; order only.
LONGEST_FIRST = ("tests/flow/test_scale_out.py", "tests/flow/test_faults.py",
                 "tests/flow/test_report_flows.py", "tests/flow/test_pacing.py",
                 "tests/flow/test_onboarding_flow.py", "tests/cli/test_busy.py",
                 "tests/cli/test_cli.py", "tests/flow/test_deals_flow.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the longest files first (a stable sort: everything else keeps its order)."""
    rank = {path: n for n, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def _pg_reachable() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    if not _pg_reachable():
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is unreachable and CI=true: must not skip")
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    name = f"handoff_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    from db.session import upgrade

    upgrade(url)
    yield url
    from db.session import dispose_all

    dispose_all()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated HANDOFF_HOME (outbox, reports, SQLite file) for one test."""
    from db.settings import get_settings

    monkeypatch.setenv("HANDOFF_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("HANDOFF_DATABASE_URL", raising=False)
    monkeypatch.delenv("HANDOFF_SMTP_HOST", raising=False)
    monkeypatch.delenv("HANDOFF_IMAP_HOST", raising=False)
    # In-process CLI calls must never wake runs on a developer's own `make run` server.
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated, empty app database: a new SQLite file, or the session's PostgreSQL emptied."""
    from db.session import upgrade
    from db.settings import get_settings

    if request.param == "sqlite":
        url = f"sqlite:///{home / 'handoff.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("pg_server_url")
        _truncate(url)
    monkeypatch.setenv("HANDOFF_DATABASE_URL", url)
    get_settings.cache_clear()
    return url


@pytest.fixture
def sqlite_url(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated, empty SQLite app database (for tests whose database is not the subject)."""
    from db.session import upgrade
    from db.settings import get_settings

    url = f"sqlite:///{home / 'handoff.db'}"
    upgrade(url)
    monkeypatch.setenv("HANDOFF_DATABASE_URL", url)
    get_settings.cache_clear()
    return url


def _truncate(url: str) -> None:
    from db.models import Base
    from db.session import get_engine

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine(url).begin() as conn:
        # TRUNCATE is not a row DELETE, so the event log's append-only trigger rightly allows it.
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    """A session on the test database; tests open their own transactions."""
    from db.session import session_factory

    with session_factory(db_url)() as s:
        yield s


@pytest.fixture
def smtp(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackSmtp]:
    """A real SMTP server on loopback (aiosmtpd), and settings pointing handoff at it."""
    from db.settings import get_settings
    from tests.smtp_server import LoopbackSmtp

    with LoopbackSmtp() as server:
        monkeypatch.setenv("HANDOFF_SMTP_HOST", server.host)
        monkeypatch.setenv("HANDOFF_SMTP_PORT", str(server.port))
        monkeypatch.setenv("HANDOFF_SMTP_STARTTLS", "false")
        monkeypatch.setenv("HANDOFF_SMTP_SSL", "false")
        monkeypatch.setenv("HANDOFF_SMTP_TIMEOUT", "3")
        get_settings.cache_clear()
        yield server
    get_settings.cache_clear()


@pytest.fixture
def playbook():  # type: ignore[no-untyped-def]
    """The shipped default playbook."""
    from db.playbook import get_playbook

    return get_playbook()


@pytest.fixture(scope="session")
def imap_server() -> Iterator[LoopbackImap]:
    """A real IMAP server on loopback (Dovecot, unprivileged), shared by the session's tests."""
    from tests.imap_server import ImapUnavailable

    try:
        server = LoopbackImap()
    except ImapUnavailable as exc:
        if IN_CI:
            pytest.fail(f"{exc} and CI=true: IMAP tests must not skip")
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def mailbox(imap_server: LoopbackImap, home: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[ImapAccount]:
    """A fresh mailbox on the IMAP server, and settings pointing the inbox sweep at it (STARTTLS,
    verified against the server's own certificate)."""
    from db.settings import get_settings

    account = imap_server.add_user()
    for key, value in imap_server.env(account).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield account
    get_settings.cache_clear()

