"""The transport alarm: mail cannot leave, said where people look without going through mail.

Raised by a delivery pass whose SMTP server refuses it (login, sender, TLS) or cannot be
reached; cleared by the first message that goes out again. Raised once per outage: a pass that
meets the same fault again records nothing new. It lives in the event log (the record of truth:
`transport_alarm` / `transport_alarm_cleared`), is logged at ERROR in the Prefect run that met
it, is a Prefect event (`handoff.transport-alarm.raised` / `.cleared`) that an automation can
act on, goes to the team's chat channels (`tasks.comms.alerts.post_transport_alarm`, called by
the outbox), and shows as a banner in `handoff status`. Other notifiers hook in with
`on_transport_alarm`; none of it depends on the failing SMTP server.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Event
from tasks.onboarding.records import log_event

RAISED = "transport_alarm"
CLEARED = "transport_alarm_cleared"
PREFECT_EVENT = "handoff.transport-alarm"  # .raised / .cleared
PREFECT_RESOURCE = {"prefect.resource.id": "handoff.mail-transport",
                    "prefect.resource.name": "handoff mail transport"}

_log = logging.getLogger("handoff.mail")


@dataclass(frozen=True)
class TransportAlarm:
    """Mail is not leaving: since when, why (`fault`: auth, refused, tls, unreachable), and the
    server's own words."""

    fault: str
    detail: str
    since: dt.datetime

    @property
    def banner(self) -> str:
        """One line for `handoff status` and logs."""
        return (f"MAIL IS NOT GOING OUT since {self.since:%Y-%m-%d %H:%M %Z} ({self.fault}): "
                f"{self.detail}")


AlarmHook = Callable[[TransportAlarm | None], None]
_hooks: list[AlarmHook] = []


def on_transport_alarm(hook: AlarmHook) -> AlarmHook:
    """Call `hook(alarm)` when the alarm is raised and `hook(None)` when it clears (after the
    record is committed). Usable as a decorator; a failing hook is logged, never raised."""
    _hooks.append(hook)
    return hook


def current_alarm(session: Session) -> TransportAlarm | None:
    """The alarm in force, if any (the last raise not followed by a clear)."""
    last = session.scalars(select(Event).where(Event.kind.in_((RAISED, CLEARED)))
                           .order_by(Event.id.desc()).limit(1)).first()
    if last is None or last.kind == CLEARED:
        return None
    return TransportAlarm(fault=str(last.detail.get("fault")),
                          detail=str(last.detail.get("detail")), since=last.at)


def raise_alarm(session: Session, fault: str, detail: str, *,
                now: dt.datetime) -> TransportAlarm | None:
    """Record the alarm unless the same fault is already in force; returns it when new."""
    existing = current_alarm(session)
    if existing is not None and existing.fault == fault:
        return None
    log_event(session, RAISED, actor="handoff", at=now, fault=fault, detail=detail)
    return TransportAlarm(fault=fault, detail=detail, since=now)


def clear_alarm(session: Session, *, now: dt.datetime) -> TransportAlarm | None:
    """Record that mail flows again, if an alarm was in force; returns the alarm cleared."""
    alarm = current_alarm(session)
    if alarm is not None:
        log_event(session, CLEARED, actor="handoff", at=now)
    return alarm


def announce(alarm: TransportAlarm, *, cleared_at: dt.datetime | None = None) -> None:
    """Say it outside mail: ERROR (raised) or WARNING (cleared, with `cleared_at`) in the
    Prefect run's log or the process log, a Prefect event, then hooks."""
    logger = _run_logger()
    if cleared_at is None:
        logger.error("%s. Held and retried mail goes out once this is fixed.", alarm.banner)
    else:
        logger.warning("Mail is going out again; the transport alarm is cleared.")
    _emit_prefect_event(alarm, cleared_at)
    for hook in list(_hooks):
        try:
            hook(alarm if cleared_at is None else None)
        except Exception:  # a broken notifier must not stop delivery
            _log.exception("transport alarm hook %r failed", hook)


def _emit_prefect_event(alarm: TransportAlarm, cleared_at: dt.datetime | None) -> None:
    """`handoff.transport-alarm.raised` / `.cleared`, for a Prefect automation to act on.

    Only inside a flow or task run, whose events client is running anyway and is drained when
    the run ends: elsewhere (the CLI, the portal) Prefect would start an events client of its
    own, or an ephemeral server when no API is configured, and could hold up the process's
    exit on a hung server. Those passes still record, log, post to chat and show the banner.
    """
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.events import emit_event

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    payload = {"fault": alarm.fault, "detail": alarm.detail, "since": alarm.since.isoformat()}
    if cleared_at is not None:
        payload["cleared_at"] = cleared_at.isoformat()
    emit_event(event=f"{PREFECT_EVENT}.{'raised' if cleared_at is None else 'cleared'}",
               resource=PREFECT_RESOURCE, payload=payload)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a flow or task run, else the module logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return _log
