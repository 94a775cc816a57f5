"""Online backup and restore of the embedded SQLite database (PostgreSQL: pg_dump/pg_restore)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy.engine import make_url

from db.session import dispose_all
from db.validation import HandoffError

PG_GUIDANCE = ("PostgreSQL databases are backed up with its own tools: "
               "pg_dump -Fc -d DBNAME -f handoff.dump ; restore with "
               "pg_restore --clean --if-exists -d DBNAME handoff.dump")


def _sqlite_path(url: str) -> Path:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise HandoffError(PG_GUIDANCE)
    if not parsed.database or parsed.database == ":memory:":
        raise HandoffError(f"database {url} is in memory; nothing to back up")
    return Path(parsed.database)


def backup(url: str, target: Path, *, force: bool = False) -> int:
    """Copy the live database to `target` with SQLite's online backup; returns pages copied."""
    source = _sqlite_path(url)
    if not source.exists():
        raise HandoffError(f"database file {source} does not exist; run 'handoff db upgrade'")
    if target.exists() and not force:
        raise HandoffError(f"{target} already exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    # closing(): sqlite3's own context manager commits but never closes, and the copy takes the
    # source's WAL mode, so an open copy could be renamed with pages still in its -wal file.
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(partial)) as dst:
        src.backup(dst)  # consistent snapshot even while the runner writes
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
    partial.replace(target)
    return pages


def _check_handoff_file(path: Path) -> None:
    if not path.exists():
        raise HandoffError(f"backup file {path} does not exist")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise HandoffError(f"{path} is not a SQLite database ({exc})") from None
    if not {"alembic_version", "onboardings", "events"} <= tables:
        raise HandoffError(f"{path} is not a handoff database backup (no handoff tables)")
    if ok != "ok":
        raise HandoffError(f"{path} failed SQLite's integrity check: {ok}")


def restore(url: str, source: Path) -> int:
    """Replace the live database's content with a backup, atomically; returns pages copied."""
    target = _sqlite_path(url)
    _check_handoff_file(source)
    dispose_all()
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        return int(dst.execute("PRAGMA page_count").fetchone()[0])
