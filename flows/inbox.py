"""The inbox sweep: client replies, auto-replies and bounces, read from the onboarding mailbox."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.mail.inbox.fetch import InboxUnavailable
from tasks.mail.inbox.sweep import check_inbox


@task(name="read the onboarding mailbox", cache_policy=NO_CACHE)
def read_mailbox(as_of: str | None) -> dict[str, object]:
    """Record what arrived since the last pass; an unreadable mailbox fails with one line."""
    logger = get_run_logger()
    try:
        report = check_inbox(as_of)
    except InboxUnavailable as exc:
        logger.error("%s", exc)
        raise InboxUnavailable(str(exc)) from None
    for handled in report.handled:
        logger.info("%s", handled.line())
    logger.info("%s", report.summary())
    return report.as_dict()


@flow(name="inbox-sweep")
def inbox_sweep(as_of: str | None = None) -> dict[str, object]:
    """Read the onboarding mailbox once (every 5 minutes, day and night)."""
    return read_mailbox(as_of)
