"""Team notices also go where the team lives: Slack, Microsoft Teams, Discord, any webhook.

Every team-audience message queued through the outbox (escalations, delivery failures and
bounces, client replies, portal submissions — whoever queues them) gets one extra outbox row per
chat channel its lane routes to in the playbook (`alerts:`), under the mail's key plus the
channel. Delivery then treats it like mail: claimed before sending, recorded at once, retried
with backoff, never sent twice. Channel URLs are Apprise URLs, kept in HANDOFF_ALERT_URLS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import Any

from db.playbook import Playbook
from db.settings import Settings
from tasks.comms import keys
from tasks.mail.render import catalog
from tasks.mail.transport import OutgoingMessage, SendOutcome, SendResult, Transport

PREFIX = "alert:"  # the recipient of an alert row: alert:<channel>


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


class OnDemand:
    """A mail transport opened on the first mail of a batch, so a batch of alerts alone never
    connects to SMTP."""

    def __init__(self, open_mail: Callable[[], Transport]) -> None:
        self._open_mail = open_mail
        self._mail: Transport | None = None

    def __enter__(self) -> OnDemand:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._mail is not None:
            self._mail.__exit__(exc_type, exc, tb)

    def send(self, msg: OutgoingMessage) -> SendResult:
        if self._mail is None:
            self._mail = self._open_mail().__enter__()
        return self._mail.send(msg)
