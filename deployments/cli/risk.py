"""`handoff risk list|open|review|close`: the risk register (playbook `risks:`)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from deployments.cli.common import (
    AtOpt,
    ByOpt,
    JsonOpt,
    emit,
    guarded,
    record_fact,
    transaction,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from db.playbook import Playbook

app = typer.Typer()

NoteOpt = Annotated[str | None, typer.Option("--note", help="Why (mandatory).")]


@app.command("list")
@guarded
def risk_list(
    open_only: Annotated[bool, typer.Option("--open", help="Only open risks.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the register: open risks first, with their owner and next review."""
    from tasks.risks.views import risk_rows

    with transaction(read_only=True) as (session, playbook):
        rows = risk_rows(session, playbook, open_only=open_only)
        tz = playbook.calendar.tz
    lines = [f"#{r['id']} {'OPEN  ' if r['open'] else 'closed'} {r['label']} — "
             f"{r['client'] or '-'} (onboarding {r['onboarding']}), owner {r['owner']}, "
             + (f"review due {r['next_review_at'].astimezone(tz):%a %d %b}" if r["open"]
                else f"closed {r['closed_at'].astimezone(tz):%Y-%m-%d}: {r['close_note']}")
             for r in rows]
    emit(as_json, rows, "\n".join(lines) if lines else
         ("no open risks" if open_only else "the risk register is empty"))


@app.command("open")
@guarded
def risk_open(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    category: Annotated[str, typer.Option("--category", help="Risk category from the playbook.")],
    note: NoteOpt = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a risk by hand; its owner is the category's lane owner (backup when away)."""
    from tasks.risks.register import open_risk

    def write(session: Session, playbook: Playbook, opened_at: dt.datetime) -> tuple[int, str]:
        risk = open_risk(session, playbook, onboarding_id, category=category, note=note, by=by,
                         at=opened_at)
        return risk.id, risk.owner_email

    risk_id, owner = record_fact(at, write)
    emit(as_json, {"risk": risk_id, "onboarding": onboarding_id, "category": category,
                   "owner": owner},
         f"risk {risk_id} ({category}) opened for onboarding {onboarding_id}, owner {owner}")


@app.command("review")
@guarded
def risk_review(
    risk_id: Annotated[int, typer.Argument(help="Risk id.")],
    note: NoteOpt = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a review of an open risk; the next is due review_every business days later."""
    from tasks.risks.register import review_risk

    due = record_fact(at, lambda session, playbook, reviewed_at: review_risk(
        session, playbook, risk_id, note=note, by=by, at=reviewed_at).next_review_at)
    emit(as_json, {"risk": risk_id, "next_review_at": due},
         f"risk {risk_id} reviewed; next review due {due:%Y-%m-%d %H:%M} UTC")


@app.command("close")
@guarded
def risk_close(
    risk_id: Annotated[int, typer.Argument(help="Risk id.")],
    note: NoteOpt = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Close a risk; the reason (--note) is mandatory."""
    from tasks.risks.register import close_risk

    record_fact(at, lambda session, _playbook, closed_at: close_risk(
        session, risk_id, note=note, by=by, at=closed_at).id)
    emit(as_json, {"risk": risk_id, "closed": True}, f"risk {risk_id} closed")
