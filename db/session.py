"""Engines (one per process and URL, created lazily, after any fork) and Alembic upgrades."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

from db.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_engines: dict[tuple[int, str], Engine] = {}
_factories: dict[tuple[int, str], sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook below issue BEGIN, not the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # a reader's snapshot never blocks the writer
    # Wait for another writer rather than fail at once.
    cursor.execute(f"PRAGMA busy_timeout={int(get_settings().sqlite_busy_ms)}")
    cursor.close()


READ_ONLY = {"handoff_read_only": True}  # execution options of a connection that only reads


def _begin_immediate(connection: Any) -> None:
    # Take the write lock when a transaction starts, so two writers serialize instead of one
    # reading a row the other is about to change (SQLite has no SELECT ... FOR UPDATE). Every
    # transaction does, read-only ones too: a long report read makes writers wait (up to
    # sqlite_busy_ms); at 100k clients the KPI load holds it ~10 s. PostgreSQL is unaffected.
    # A connection marked READ_ONLY begins a plain (deferred) transaction: no write lock.
    if connection.get_execution_options().get("handoff_read_only"):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# PostgreSQL: serialization failure, deadlock, lock not available, too many connections.
_BUSY_SQLSTATES = {"40001", "40P01", "55P03", "53300"}


def is_busy(exc: BaseException) -> bool:
    """Whether a database error means "another writer holds it; try again" (nothing written)."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) in _BUSY_SQLSTATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database is busy" in text


def get_engine(url: str | None = None) -> Engine:
    """The engine for this process and URL (defaults to the configured database)."""
    url = url or get_settings().database_url
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url, connect_args={"timeout": get_settings().sqlite_busy_ms / 1000})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _begin_immediate)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        _engines[key] = engine
    return engine


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """The sessionmaker of this process's engine for the URL, made once.

    `with factory.begin() as session:` is the one way to open a transaction (`transaction()`
    below for the configured database); functions below that take the session.
    """
    key = (os.getpid(), url or get_settings().database_url)
    factory = _factories.get(key)
    if factory is None:
        factory = _factories[key] = sessionmaker(get_engine(url), expire_on_commit=False)
    return factory


def transaction(url: str | None = None, *,
                read_only: bool = False) -> AbstractContextManager[Session]:
    """A session in one transaction: committed when the block ends, rolled back if it raises.

    `read_only`: on SQLite a plain BEGIN on a WAL snapshot instead of BEGIN IMMEDIATE, so the
    reader never holds the write lock (a client's page view in the portal must not make the
    VAs' and the flows' writes wait, nor wait for them). It must not write."""
    return _read_transaction(url) if read_only else session_factory(url).begin()


@contextmanager
def _read_transaction(url: str | None) -> Iterator[Session]:
    with session_factory(url)() as session, session.begin():
        session.connection(execution_options=READ_ONLY)  # before BEGIN: the hook reads it
        yield session


def alembic_config() -> Config:
    """Alembic configuration pointing at db/migrations, no ini file needed."""
    from alembic.config import Config  # imported when needed: not on every CLI command

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database schema to the given revision."""
    from alembic import command

    config = alembic_config()
    with get_engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def is_current(url: str | None = None) -> bool:
    """True when the schema exists (used to give a clear error instead of a SQL one); reads
    without taking SQLite's write lock."""
    with get_engine(url).connect() as connection:
        return inspect(connection.execution_options(**READ_ONLY)).has_table("onboardings")


def dispose_all(keep: str | None = None) -> None:
    """Close every pooled connection of this process (tests, backup/restore), and forget the
    engines, but `keep`'s."""
    for key in [key for key in _factories if key[1] != keep]:
        del _factories[key]
    for key, engine in list(_engines.items()):
        if key[1] != keep:
            engine.dispose()
            del _engines[key]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while many rows are fetched.

    A bulk read creates hundreds of thousands of objects that survive the read (row tuples,
    frames, snapshot entries); each time enough of them accumulate, the collector walks the
    whole heap again, which made the KPI load twice and a sweep's snapshot ~1.8x as slow at 100k
    clients. Pausing only defers its next pass; it is turned back on (if it was on) on exit,
    whatever happens inside. Process-wide: another thread's collection waits meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
