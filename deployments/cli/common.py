"""What every `handoff` command shares: its options, one-line errors, output and transaction.

Light on purpose: every command imports it, so SQLAlchemy, the playbook and Prefect are imported
where a command needs them, not here.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from db.validation import HandoffError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from db.playbook import Playbook

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AtOpt = Annotated[str | None, typer.Option("--at", help="When it happened (ISO 8601; default "
                                           "now; no offset = playbook timezone).")]
ByOpt = Annotated[str, typer.Option("--by", help="Who recorded it.")]
WAIT_SECONDS = 60.0
WaitOpt = Annotated[bool, typer.Option(
    "--wait", help=f"Wait (up to {WAIT_SECONDS:g} s) for the client's run to act on it, and say "
                   "where the client stands then.")]
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


BUSY = "the database is busy; nothing was recorded, try again"
BUSY_EXIT = 75  # EX_TEMPFAIL: nothing is wrong with the request; run it again


class DatabaseBusy(Exception):
    """Another writer held the database for longer than we waited; nothing was written."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """One clear line on stderr and a non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guarded(func: F) -> F:
    """Turn refused requests (a HandoffError, the playbook's included) into one line, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HandoffError as exc:
            raise fail(str(exc)) from None
        except DatabaseBusy:
            raise fail(BUSY, BUSY_EXIT) from None

    return wrapper  # type: ignore[return-value]


def emit(as_json: bool, data: Any, human: str) -> None:
    """Print for a person or for a script."""
    if as_json:
        typer.echo(json.dumps(data, default=_jsonable, indent=2))
    else:
        typer.echo(human)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@contextmanager
def transaction(*, read_only: bool = False) -> Iterator[tuple[Session, Playbook]]:
    """A session in one transaction with the playbook; refused actions roll everything back.

    Everything that can be prepared outside the transaction is (the playbook, the schema check,
    the business calendar and its holidays), so SQLite's write lock is held for milliseconds.
    A database busy with another writer is waited for (SQLite's busy timeout), then tried again
    a few times with backoff; after that the command says so in one line, nothing written.
    `read_only` transactions take no write lock at all.
    """
    from sqlalchemy.exc import OperationalError

    from db.playbook import get_playbook
    from db.session import is_busy, is_current, session_factory
    from db.settings import get_settings
    from tasks.calendar.clock import warm_calendar

    playbook = get_playbook()
    if not is_current():
        raise HandoffError(
            f"the database at {get_settings().database_url} is not set up; run 'handoff db upgrade'"
        )
    warm_calendar(playbook, dt.datetime.now(dt.UTC))
    session = _begun(session_factory(), read_only=read_only)
    try:
        yield session, playbook
        session.commit()
    except OperationalError as exc:
        session.rollback()
        if is_busy(exc):
            raise DatabaseBusy from None
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _begun(factory: Callable[[], Session], *, read_only: bool) -> Session:
    """A session whose transaction has begun (on SQLite: the write lock taken), retried with
    backoff while the database is busy."""
    from sqlalchemy.exc import OperationalError

    from db.session import READ_ONLY, is_busy

    for pause in (0.2, 0.5, 1.0, None):
        session = factory()
        try:
            session.begin()
            session.connection(execution_options=READ_ONLY if read_only else None)
            return session
        except OperationalError as exc:
            session.close()
            if not is_busy(exc):
                raise
            if pause is None:
                raise DatabaseBusy from None
            time.sleep(pause * (1 + random.random()))  # jitter: VAs retrying apart
    raise AssertionError("unreachable")


def when(value: str | None, field: str = "--at") -> dt.datetime:
    """Parse a --at / --as-of option: no offset = the playbook's timezone, empty = now."""
    from tasks.calendar.clock import parse_as_of

    return parse_as_of(value, field)


def happened(value: str | None, field: str = "--at") -> dt.datetime:
    """`when` for a time something happened: one in the future is refused (playbook
    input_limits.future_minutes)."""
    from db.playbook import get_playbook
    from tasks.onboarding.records import check_happened

    return check_happened(get_playbook(), when(value, field), field)


def record_fact(at: str | None, write: Callable[[Session, Playbook, dt.datetime], T]) -> T:
    """Record a fact that happened `at` (default now, never in the future): the time is checked
    and everything prepared before the transaction, so `write(session, playbook, at)` runs with
    the write lock held for milliseconds. `write` returns plain values (ids, not rows: rows
    expire when the transaction commits)."""
    happened_at = happened(at)
    with transaction() as (session, playbook):
        return write(session, playbook, happened_at)


def nudge(onboarding_id: int, wait: bool = False) -> str:
    """Tell the client's flow run that something changed (with `wait`, see it act); say plainly
    what happened. The fact is already committed: whatever goes wrong here is said, never
    reported as a failed command."""
    from tasks.prefect.wake import nudge_run

    try:
        return nudge_run(onboarding_id, WAIT_SECONDS if wait else 0.0)
    except Exception as exc:  # noqa: BLE001 - the record stands; reconcile wakes the run
        return (f"recorded; waking the run failed ({type(exc).__name__}); the reconcile flow "
                "will catch it up")


def start(onboarding_id: int) -> str:
    """Start the client's flow run; say plainly whether it started."""
    from tasks.prefect.pacing import start_run

    return start_run(onboarding_id)
