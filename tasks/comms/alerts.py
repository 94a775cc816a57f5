"""Team notices also go where the team lives: Slack, Microsoft Teams, Discord, any webhook.

Every team-audience message queued through the outbox (escalations, delivery failures and
bounces, client replies, portal submissions — whoever queues them) gets one extra outbox row per
chat channel its lane routes to in the playbook (`alerts:`), under the mail's key plus the
channel. Delivery then treats it like mail: claimed before sending, recorded at once, retried
with backoff, never sent twice. Channel URLs are Apprise URLs, kept in HANDOFF_ALERT_URLS.

The transport alarm (mail cannot leave) is posted straight to every channel the playbook routes
to, once when raised and once when cleared: it must not wait for the mail it is about.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from db.playbook import Playbook
from db.settings import Settings
from tasks.comms import keys
from tasks.mail.alarm import TransportAlarm
from tasks.mail.message import OutgoingMessage
from tasks.mail.outcomes import SendOutcome, SendResult
from tasks.mail.render import catalog, render_page
from tasks.mail.transport import Transport

PREFIX = "alert:"  # the recipient of an alert row: alert:<channel>
TRANSPORT_ALARM_TEMPLATE = "alerts/transport_alarm.txt"  # first line: the title

_log = logging.getLogger("handoff.mail")


def is_alert(recipients: str | list[str] | tuple[str, ...]) -> bool:
    """Whether an outbox row (by its recipients) is a chat alert rather than mail."""
    first = recipients if isinstance(recipients, str) else (recipients[0] if recipients else "")
    return first.startswith(PREFIX)


def alert_drafts(playbook: Playbook, drafts: list[Any]) -> list[Any]:
    """One copy of each team notice per chat channel of its lane; none for client mail."""
    specs = catalog()
    copies = []
    for draft in drafts:
        spec = specs[draft.template]
        if spec.audience != "team" or is_alert(draft.recipients):
            continue
        for channel in playbook.alerts.get(spec.lane, []):
            copies.append(replace(draft, recipients=[PREFIX + channel], attachments=(),
                                  key=keys.alert_copy(draft.key, PREFIX + channel)))
    return copies


def send_alert(settings: Settings, *, key: str, recipients: str, title: str,
               body: str) -> SendResult:
    """Post one notice to its channel through Apprise; the URL (a secret) is never echoed."""
    import apprise

    channel = recipients.removeprefix(PREFIX)
    url = settings.alert_urls.get(channel)
    if url is None:
        return SendResult(key, SendOutcome.PERMANENT, "",
                          f"alert channel {channel!r} has no URL in HANDOFF_ALERT_URLS")
    notifier = apprise.Apprise()
    if not notifier.add(url.get_secret_value()):
        return SendResult(key, SendOutcome.PERMANENT, "",
                          f"HANDOFF_ALERT_URLS[{channel!r}] is not an Apprise URL")
    if notifier.notify(title=title, body=body):
        return SendResult(key, SendOutcome.SENT, f"{PREFIX}{channel}", None)
    return SendResult(key, SendOutcome.TRANSIENT, "",
                      f"alert channel {channel!r} did not accept the notice")


def post_transport_alarm(settings: Settings, playbook: Playbook, alarm: TransportAlarm, *,
                         cleared_at: dt.datetime | None = None) -> list[str]:
    """Tell every chat channel of the playbook's `alerts:` that mail is not going out (or, with
    `cleared_at`, that it goes out again); returns the channels that took it. A channel that
    is down is logged, never raised: delivery goes on."""
    channels = list(dict.fromkeys(c for lane in playbook.alerts.values() for c in lane))
    if not channels:
        return []
    tz = playbook.calendar.tz
    title, _, body = render_page(TRANSPORT_ALARM_TEMPLATE, {
        "business": playbook.business.name, "fault": alarm.fault, "detail": alarm.detail,
        "since": f"{alarm.since.astimezone(tz):%a %Y-%m-%d %H:%M %Z}",
        "cleared_at": f"{cleared_at.astimezone(tz):%a %Y-%m-%d %H:%M %Z}" if cleared_at else None,
    }).strip().partition("\n")
    posted = []
    for channel in channels:
        try:
            result = send_alert(settings, key="transport-alarm", recipients=PREFIX + channel,
                                title=title.strip(), body=body.strip())
        except Exception:  # a broken notifier must not stop delivery
            _log.exception("posting the transport alarm to channel %r failed", channel)
            continue
        if result.outcome is SendOutcome.SENT:
            posted.append(channel)
        else:
            _log.error("the transport alarm did not reach channel %r: %s", channel, result.error)
    return posted


class OnDemand(Transport):
    """A mail transport opened on the first mail of a batch, so a batch of alerts alone never
    connects to SMTP."""

    def __init__(self, open_mail: Callable[[], Transport]) -> None:
        self._open_mail = open_mail
        self._mail: Transport | None = None

    def close(self) -> None:
        if self._mail is not None:
            self._mail.close()

    def _opened(self) -> Transport:
        if self._mail is None:
            self._mail = self._open_mail().__enter__()
        return self._mail

    def send(self, msg: OutgoingMessage) -> SendResult:
        return self._opened().send(msg)

    def send_all(self, messages: Iterable[OutgoingMessage]) -> Iterator[SendResult]:
        pending = iter(messages)
        first = next(pending, None)
        if first is not None:
            yield from self._opened().send_all(itertools.chain((first,), pending))
