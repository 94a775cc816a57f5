"""The transport alarm: mail cannot leave, said where people look without going through mail.

Raised by a delivery pass whose SMTP server refuses it (login, sender, TLS) or cannot be
reached; cleared by the first message that goes out again. Raised once per outage: a pass that
meets the same fault again records nothing new. It lives in the event log (the record of truth:
`transport_alarm` / `transport_alarm_cleared`), is logged at ERROR in the Prefect run that met
it, and shows as a banner in `handoff status`. Other channels (a chat or SMS notifier) hook in
with `on_transport_alarm`; a hook never depends on the failing SMTP server.
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


def clear_alarm(session: Session, *, now: dt.datetime) -> bool:
    """Record that mail flows again, if an alarm was in force."""
    if current_alarm(session) is None:
        return False
    log_event(session, CLEARED, actor="handoff", at=now)
    return True


def announce(alarm: TransportAlarm | None) -> None:
    """Say it outside mail: ERROR in the Prefect run's log (or the process log), then hooks."""
    logger = _run_logger()
    if alarm is not None:
        logger.error("%s. Held and retried mail goes out once this is fixed.", alarm.banner)
    else:
        logger.warning("Mail is going out again; the transport alarm is cleared.")
    for hook in list(_hooks):
        try:
            hook(alarm)
        except Exception:  # a broken notifier must not stop delivery
            _log.exception("transport alarm hook %r failed", hook)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a flow or task run, else the module logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return _log
