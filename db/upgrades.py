"""Schema upgrades as a person runs them: where the database is, what this code knows, and a
backup of a SQLite database before anything changes it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import make_url

from db.backup import backup
from db.session import alembic_config, get_engine, upgrade
from db.validation import HandoffError


@dataclass(frozen=True)
class UpgradeResult:
    """What `handoff db upgrade` did."""

    database: str
    before: str | None  # revision found (None: an empty database)
    after: str | None  # revision left (the head, or `before` when forced past a newer schema)
    backup: Path | None  # the SQLite copy taken before migrating
    note: str  # one line for the person who ran it


def head_revision() -> str:
    """The newest revision this code knows (the chain has one head)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    """The revision the database is at; None when it has no schema yet."""
    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def backup_path(url: str, revision: str, now: dt.datetime) -> Path:
    """Next to the database: backups/<name>-<revision>-<UTC time>.db."""
    database = Path(str(make_url(url).database))
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return database.parent / "backups" / f"{database.stem}-{revision}-{stamp}.db"


def upgrade_database(url: str, *, force: bool = False) -> UpgradeResult:
    """Bring the schema to head; a SQLite file is copied first; a newer schema is refused."""
    head = head_revision()
    before = current_revision(url)
    if before == head:
        return UpgradeResult(url, before, head, None, f"database is up to date ({head}): {url}")
    if before is not None and not _known(before):
        if not force:
            raise HandoffError(
                f"the database at {url} is at revision '{before}', newer than this version of "
                f"handoff knows (its newest is '{head}'): run the newer handoff, or restore the "
                "backup taken before that upgrade; --force runs this version on it as it is")
        return UpgradeResult(url, before, before, None,
                             f"database left at revision '{before}' (newer than '{head}'), "
                             f"as --force asked: {url}")
    copy = None
    if before is not None and make_url(url).get_backend_name() == "sqlite":
        copy = backup_path(url, before, dt.datetime.now(dt.UTC))
        backup(url, copy)
    upgrade(url, head)
    if before is None:
        note = f"database created at revision '{head}': {url}"
    elif copy is not None:
        note = (f"database upgraded from '{before}' to '{head}': {url}\n"
                f"backup of the '{before}' database: {copy}")
    else:
        note = (f"database upgraded from '{before}' to '{head}': {url}\n(PostgreSQL: no backup "
                "taken here; take one with pg_dump before upgrading)")
    return UpgradeResult(url, before, head, copy, note)
