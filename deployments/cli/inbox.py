"""`handoff inbox check`: one pass over the onboarding mailbox, by hand."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli.common import JsonOpt, emit, fail, guarded

app = typer.Typer()


@app.command("check")
@guarded
def inbox_check(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be recorded; "
                                          "record nothing.")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Read as if it were this time "
                                              "(ISO 8601; default now).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Read the onboarding mailbox now: print each new message, what it matched and what was
    done (client reply, auto-reply, bounce, probable reply, ignored)."""
    from tasks.mail.inbox.fetch import InboxUnavailable
    from tasks.mail.inbox.sweep import check_inbox

    try:
        report = check_inbox(as_of, dry_run=dry_run)
    except InboxUnavailable as exc:
        raise fail(str(exc), code=1) from None
    lines = [h.line() for h in report.handled]
    emit(as_json, report.as_dict(), "\n".join([*lines, report.summary()]))
