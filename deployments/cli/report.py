"""`handoff report weekly`: the founder's weekly onboarding review."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli.common import JsonOpt, emit, guarded, transaction, when

app = typer.Typer()


@app.command("weekly")
@guarded
def report_weekly(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Review as if it were this "
                                              "time (ISO 8601; default now).")] = None,
    send: Annotated[bool, typer.Option("--send", help="Also e-mail it to the founder "
                                       "(once per ISO week).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Last week's review: stage aging, blockers, threshold breaks, actions, risks."""
    from tasks.reporting.steps import deliver_due
    from tasks.reporting.weekly import build_weekly_review, queue_weekly_email

    at = when(as_of, "--as-of")
    with transaction() as (session, playbook):
        review = build_weekly_review(session, playbook, at)
        queued = queue_weekly_email(session, playbook, review, at) if send else False
    sent = deliver_due(at).sent if send else 0
    data = {"week": review.week, "breaches": [b.title for b in review.breaches],
            "actions_created": review.actions_created, "queued": queued, "sent": sent,
            "markdown": review.markdown}
    tail = f"\ne-mail: {'queued and sent' if queued else 'already sent this week'}" \
        if send else ""
    emit(as_json, data, review.markdown.rstrip() + tail)
