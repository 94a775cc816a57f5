"""`handoff db upgrade|backup|restore`: the database schema and its backups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from db.settings import get_settings
from deployments.cli.common import JsonOpt, emit, guarded

app = typer.Typer()


@app.command("upgrade")
@guarded
def db_upgrade(
    force: Annotated[bool, typer.Option(
        "--force", help="Go on when the database is newer than this version of handoff "
                        "(its schema is left as it is).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create or migrate the schema to this version; a SQLite file is backed up first."""
    from db.upgrades import upgrade_database

    result = upgrade_database(get_settings().database_url, force=force)
    emit(as_json, {"database": result.database, "from": result.before, "revision": result.after,
                   "backup": str(result.backup) if result.backup else None}, result.note)


@app.command("backup")
@guarded
def db_backup(
    target: Annotated[Path, typer.Argument(help="Where to write the backup file.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Back up the embedded SQLite database online (PostgreSQL: use pg_dump)."""
    from db.backup import backup

    pages = backup(get_settings().database_url, target, force=force)
    emit(as_json, {"backup": str(target), "pages": pages}, f"backed up to {target} ({pages} pages)")


@app.command("restore")
@guarded
def db_restore(
    source: Annotated[Path, typer.Argument(help="A file written by 'handoff db backup'.")],
    as_json: JsonOpt = False,
) -> None:
    """Restore the embedded SQLite database from a backup (stop the runner first)."""
    from db.backup import restore

    pages = restore(get_settings().database_url, source)
    emit(as_json, {"restored": str(source), "pages": pages},
         f"restored from {source} ({pages} pages)")
