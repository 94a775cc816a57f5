"""A database written by the first release upgrades to head and keeps every row and its meaning.

tests/data/v0.1.0.db.gz was written by the v0.1.0 code (tests/data/make_v010_fixture.py: the demo
history, a client walked through every stage, outbox rows of every status). The test upgrades a
copy with `handoff db upgrade`, on SQLite and on PostgreSQL, then compares every row of every
table with the fixture, column by column.

A new migration adds ONE entry to MIGRATIONS below, saying what it does to rows that existed
before it: the value each new column holds on an old row, the tables it adds, the old values it
rewrites. The test fails for a migration without an entry, a new column without an expected
value, and any old value that changed without being declared.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, create_engine, select, text

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = DATA / "v0.1.0.db.gz"
FIXTURE_KPIS = DATA / "v0.1.0.kpis.json"
KPI_AS_OF = "2026-11-26T12:00:00+00:00"  # as in make_v010_fixture.py

Row = dict[str, Any]
Expect = Callable[[Row, "Fixture"], Any]


@dataclass(frozen=True)
class Migration:
    """What one migration does to the rows that existed before it."""

    revision: str
    # "table.column" -> the value an old row holds in a column this migration adds
    new_columns: dict[str, Expect] = field(default_factory=dict)
    # "table.column" -> the value an old row holds after this migration rewrote it
    rewritten: dict[str, Expect] = field(default_factory=dict)
    # table -> rows it holds right after the upgrade (a new table starts empty unless it says)
    new_tables: dict[str, Callable[[Fixture], int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Fixture:
    """The v0.1.0 rows, by table and primary key, and facts about them the expectations use."""

    rows: dict[str, dict[tuple[Any, ...], Row]]
    columns: dict[str, set[str]]

    @property
    def demo_ids(self) -> set[int]:
        """Onboardings `handoff demo` wrote: their history carries the seed's message body."""
        return {row["onboarding_id"] for row in self.rows["communications"].values()
                if row["body_text"].startswith("Seeded demo history")}


def empty(_fixture: Fixture) -> int:
    return 0


def unset(_row: Row, _fixture: Fixture) -> None:
    return None


MIGRATIONS: list[Migration] = [
    Migration("0001"),  # the v0.1.0 schema itself
    Migration("deals", new_tables={"deal_links": empty, "deal_cursors": empty}),
    Migration("inbox_replies", new_columns={"client_responses.message_id": unset},
              new_tables={"mailbox_cursors": empty, "inbound_messages": empty}),
    Migration("demo_flag",
              new_columns={"onboardings.demo": lambda row, fx: row["id"] in fx.demo_ids},
              rewritten={"communications.status": lambda row, fx: (
                  "suppressed" if row["status"] == "queued" and row["onboarding_id"]
                  in fx.demo_ids else row["status"])}),
    # Old onboardings need no portal row: no row means link version 1, issued at the close.
    Migration("portal_tables", new_tables={"portal_links": empty, "intake_answers": empty,
                                           "intake_submissions": empty, "portal_uploads": empty}),
    Migration("paced_starts", new_tables={"run_starts": empty}),
    # An old row's stage holds it to what the playbook in force requires (None: not recorded).
    Migration("stage_items", new_columns={"onboardings.stage_items": unset,
                                          "onboardings.stage_playbook_version": unset}),
    Migration("risk_register", new_columns={f"risks.{c}": unset for c in (
        "lane", "opened_by", "next_review_at", "reviewed_at", "close_note")}),
    # An old onboarding has no client timezone: its mail follows the business's hours, as before.
    Migration("client_timezone", new_columns={"onboardings.client_tz": unset}),
]


# -- reading and comparing ---------------------------------------------------------------------


def _normal(value: Any) -> Any:
    """One form for a value read from SQLite or PostgreSQL (UTC instants, parsed JSON)."""
    if isinstance(value, dt.datetime):
        return (value.replace(tzinfo=dt.UTC) if value.tzinfo is None
                else value.astimezone(dt.UTC))
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def columns_of(engine: Engine) -> dict[str, set[str]]:
    """Each table's column names (but alembic's)."""
    meta = MetaData()
    meta.reflect(engine)
    return {t.name: {c.name for c in t.columns} for t in meta.sorted_tables
            if t.name != "alembic_version"}


def read_all(engine: Engine) -> dict[str, dict[tuple[Any, ...], Row]]:
    """Every row of every table (but alembic's), keyed by primary key."""
    meta = MetaData()
    meta.reflect(engine)
    out: dict[str, dict[tuple[Any, ...], Row]] = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            keys = [c.name for c in table.primary_key.columns]
            out[table.name] = {
                tuple(row[k] for k in keys): {k: _normal(v) for k, v in row.items()}
                for row in conn.execute(select(table)).mappings()}
    return out


def expected_after(before: Fixture, head_tables: dict[str, set[str]]) -> tuple[
        dict[str, dict[tuple[Any, ...], Row]], dict[str, int]]:
    """The rows the upgraded database must hold, and the row count of each new table."""
    new_columns: dict[str, Expect] = {}
    rewritten: dict[str, Expect] = {}
    new_tables: dict[str, Callable[[Fixture], int]] = {}
    for migration in MIGRATIONS:
        new_columns |= migration.new_columns
        rewritten |= migration.rewritten
        new_tables |= migration.new_tables
    rows: dict[str, dict[tuple[Any, ...], Row]] = {}
    for table, old in before.rows.items():
        added = head_tables[table] - before.columns[table]
        undeclared = sorted(f"{table}.{c}" for c in added if f"{table}.{c}" not in new_columns)
        assert not undeclared, (f"columns {undeclared} were added by a migration without a value "
                                "for old rows in MIGRATIONS (tests/db/test_upgrade.py)")
        rows[table] = {}
        for key, row in old.items():
            want = dict(row)
            for column in added:
                want[column] = new_columns[f"{table}.{column}"](row, before)
            for name, expect in rewritten.items():
                if name.startswith(f"{table}."):
                    want[name.split(".", 1)[1]] = expect(row, before)
            rows[table][key] = want
    extra = sorted(set(head_tables) - set(before.rows) - set(new_tables))
    assert not extra, (f"tables {extra} were added by a migration not declared in MIGRATIONS "
                       "(tests/db/test_upgrade.py)")
    return rows, {name: count(before) for name, count in new_tables.items()}


def assert_same_meaning(before: Fixture, engine: Engine) -> None:
    """Every fixture row is still there, every column as it was or as MIGRATIONS declares."""
    want, new_counts = expected_after(before, columns_of(engine))
    after = read_all(engine)
    for table, rows in want.items():
        assert len(after[table]) == len(rows), f"{table}: {len(after[table])} rows, {len(rows)} before"
        for key, row in rows.items():
            got = after[table].get(key)
            assert got is not None, f"{table} row {key} is gone"
            diff = {c: (row[c], got.get(c)) for c in row if got.get(c) != row[c]}
            assert not diff, f"{table} row {key} changed: {diff}"
    for table, count in new_counts.items():
        assert len(after[table]) == count, f"new table {table}: {len(after[table])} rows, want {count}"


# -- the chain -----------------------------------------------------------------------------------


def chain() -> list[str]:
    """Revisions from base to head, in order (one head, per the project's rule)."""
    from alembic.script import ScriptDirectory

    from db.session import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1, f"the migration chain has several heads: {script.get_heads()}"
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def test_every_migration_says_what_it_does_to_old_rows() -> None:
    declared = [m.revision for m in MIGRATIONS]
    missing = [rev for rev in chain() if rev not in declared]
    assert not missing, (f"migrations {missing} have no entry in MIGRATIONS in "
                         "tests/db/test_upgrade.py: add one saying what they do to old rows")
    assert declared == chain(), f"MIGRATIONS {declared} is not in chain order {chain()}"


# -- the databases -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The v0.1.0 database, uncompressed, read-only by convention (tests copy it)."""
    assert FIXTURE.exists(), f"{FIXTURE} is missing; tests/data/make_v010_fixture.py makes it"
    path = tmp_path_factory.mktemp("v010") / "v0.1.0.db"
    path.write_bytes(gzip.decompress(FIXTURE.read_bytes()))
    return path


@pytest.fixture(scope="module")
def before(fixture_file: Path) -> Fixture:
    engine = create_engine(f"sqlite:///{fixture_file}")
    try:
        return Fixture(read_all(engine), columns_of(engine))
    finally:
        engine.dispose()


def handoff(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a person runs it."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
           "HANDOFF_DATABASE_URL": url, "HANDOFF_HOME": str(home),
           "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    return subprocess.run([str(Path(sys.executable).with_name("handoff")), *args],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def _copy_rows(source: Engine, target: Engine) -> None:
    """Copy the fixture's rows into a v0.1.0 schema made by the 0001 migration on PostgreSQL."""
    src_meta, dst_meta = MetaData(), MetaData()
    src_meta.reflect(source)
    dst_meta.reflect(target)
    with source.connect() as src, target.begin() as dst:
        for table in dst_meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            rows = [{k: _normal(v) for k, v in row.items()}
                    for row in src.execute(select(src_meta.tables[table.name])).mappings()]
            if rows:
                dst.execute(table.insert(), rows)
            if "id" in table.c:
                dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                 f"coalesce((SELECT max(id) FROM {table.name}), 0) + 1, false)"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_database(request: pytest.FixtureRequest, tmp_path: Path,
                 fixture_file: Path) -> Iterator[str]:
    """A database at v0.1.0 holding the fixture's rows: a copy of the file, or PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "var" / "handoff.db"
        path.parent.mkdir()
        shutil.copyfile(fixture_file, path)
        yield f"sqlite:///{path}"
        return
    from db.session import dispose_all, upgrade
    from tests.conftest import PG_ADMIN_URL

    request.getfixturevalue("pg_server_url")  # PostgreSQL is up (or skipped, never in CI)
    name = f"handoff_upgrade_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url, "0001")
    source = create_engine(f"sqlite:///{fixture_file}")
    target = create_engine(url)
    _copy_rows(source, target)
    source.dispose()
    target.dispose()
    try:
        yield url
    finally:
        dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_fixture_was_written_by_v010(before: Fixture, fixture_file: Path) -> None:
    with sqlite3.connect(fixture_file) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
    statuses = {row["status"] for row in before.rows["communications"].values()}
    assert statuses == {"queued", "sending", "sent", "failed", "uncertain"}
    assert {row["status"] for row in before.rows["onboardings"].values()} == {"active", "ready"}
    assert len(before.demo_ids) >= 30 and len(before.rows["onboardings"]) > len(before.demo_ids)


def test_upgrade_keeps_every_row_and_its_meaning(old_database: str, before: Fixture,
                                                 tmp_path: Path) -> None:
    done = handoff(old_database, tmp_path / "var", "db", "upgrade")
    assert done.returncode == 0, done.stderr
    engine = create_engine(old_database)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == chain()[-1]
        assert_same_meaning(before, engine)
    finally:
        engine.dispose()
    kpis = handoff(old_database, tmp_path / "var", "kpi", "--json", "--as-of", KPI_AS_OF)
    assert kpis.returncode == 0, kpis.stderr
    groups = [(r["scope"], r["group"]) for r in json.loads(kpis.stdout)]
    assert groups == [(r["scope"], r["group"]) for r in json.loads(FIXTURE_KPIS.read_text())]
    listing = handoff(old_database, tmp_path / "var", "status", "--json")
    assert listing.returncode == 0, listing.stderr
    assert {(r["id"], r["stage"], r["status"]) for r in json.loads(listing.stdout)} == {
        (row["id"], row["stage"], row["status"]) for row in before.rows["onboardings"].values()}


def _sqlite_copy(fixture_file: Path, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "var" / "handoff.db"
    path.parent.mkdir()
    shutil.copyfile(fixture_file, path)
    return path, f"sqlite:///{path}"


def test_a_sqlite_upgrade_is_backed_up_first_and_says_where(
        fixture_file: Path, tmp_path: Path, before: Fixture) -> None:
    path, url = _sqlite_copy(fixture_file, tmp_path)
    done = handoff(url, path.parent, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    backups = list((path.parent / "backups").iterdir())
    assert len(backups) == 1 and str(backups[0]) in done.stdout, done.stdout
    with sqlite3.connect(backups[0]) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert conn.execute("SELECT count(*) FROM onboardings").fetchone()[0] == len(
            before.rows["onboardings"])
    again = handoff(url, path.parent, "db", "upgrade")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert len(list((path.parent / "backups").iterdir())) == 1  # nothing to change, no copy


def test_a_database_newer_than_this_code_is_refused_unless_forced(
        fixture_file: Path, tmp_path: Path) -> None:
    path, url = _sqlite_copy(fixture_file, tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'from_a_later_release'")
    refused = handoff(url, path.parent, "db", "upgrade")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "from_a_later_release" in refused.stderr
    assert chain()[-1] in refused.stderr and "--force" in refused.stderr
    assert not (path.parent / "backups").exists()
    forced = handoff(url, path.parent, "db", "upgrade", "--force")
    assert forced.returncode == 0, forced.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("from_a_later_release",)]


def test_the_models_and_the_migrations_build_the_same_schema(db_url: str) -> None:
    """Alembic's autogenerate finds nothing between the migrated database and db.models: no
    model module left out of the package's imports, no model change without its migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base
    from db.session import get_engine

    with get_engine(db_url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
