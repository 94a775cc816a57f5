"""What every `handoff` command shares: its options, one-line errors, output and transaction.

Light on purpose: every command imports it, so SQLAlchemy, the playbook and Prefect are imported
where a command needs them, not here.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
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
F = TypeVar("F", bound=Callable[..., Any])


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
def transaction() -> Iterator[tuple[Session, Playbook]]:
    """A session in one transaction with the playbook; refused actions roll everything back."""
    from db.playbook import get_playbook
    from db.session import is_current
    from db.session import transaction as begin
    from db.settings import get_settings

    playbook = get_playbook()
    if not is_current():
        raise HandoffError(
            f"the database at {get_settings().database_url} is not set up; run 'handoff db upgrade'"
        )
    with begin() as session:
        yield session, playbook


def when(value: str | None, field: str = "--at") -> dt.datetime:
    """Parse a --at / --as-of option: no offset = the playbook's timezone, empty = now."""
    from tasks.calendar.clock import parse_as_of

    return parse_as_of(value, field)


def nudge(onboarding_id: int) -> str:
    """Tell the client's flow run that something changed; say plainly what happened."""
    from tasks.prefect.runs import nudge_run

    return nudge_run(onboarding_id)


def start(onboarding_id: int) -> str:
    """Start the client's flow run; say plainly whether it started."""
    from tasks.prefect.runs import start_run

    return start_run(onboarding_id)
