"""One pass over the onboarding mailbox: read what is new, match, classify, record, notify.

Under the `sweep:inbox` lease. Each batch of messages is recorded in one transaction together
with the cursor that says it was read, so a pass that dies anywhere has either recorded a batch
and moved past it, or neither: the next pass starts where the record says, and unique
Message-IDs make a re-read harmless. The owner notices go out at the end of the pass, through
the outbox, like every other message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.lease import lease
from db.models import MailboxCursor
from db.playbook import Playbook
from db.settings import Settings
from tasks.mail.delivery import deliver
from tasks.mail.inbox.classify import read_message
from tasks.mail.inbox.fetch import BATCH, Fetched, MailboxConfig, open_mailbox
from tasks.mail.inbox.match import match_message
from tasks.mail.inbox.record import Handled, already_recorded, ignored, record_message

LEASE = "sweep:inbox"
NOT_CONFIGURED = "HANDOFF_IMAP_HOST is not set: the inbox is not read"


@dataclass
class InboxReport:
    """What one pass read and did."""

    mailbox: str = ""
    uidvalidity: int | None = None
    reread: bool = False  # the folder's UIDVALIDITY changed: read again from the start
    handled: list[Handled] = field(default_factory=list)
    sent: int = 0
    dry_run: bool = False
    skipped: str | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.handled:
            out[item.outcome] = out.get(item.outcome, 0) + 1
        return out

    def summary(self) -> str:
        """One line: how much was read from where, and what became of it."""
        if self.skipped:
            return self.skipped
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items())) or "nothing new"
        again = " (UIDVALIDITY changed: read again from the start)" if self.reread else ""
        dry = " (dry run: nothing recorded)" if self.dry_run else ""
        return f"{self.mailbox}: {len(self.handled)} message(s) read{again}: {counts}{dry}"

    def as_dict(self) -> dict[str, object]:
        if self.skipped:
            return {"skipped": self.skipped}
        return {"mailbox": self.mailbox, "uidvalidity": self.uidvalidity, "reread": self.reread,
                "read": len(self.handled), "counts": self.counts(), "notices_sent": self.sent,
                "dry_run": self.dry_run, "messages": [h.line() for h in self.handled]}


def run_inbox_sweep(factory: sessionmaker[Session], playbook: Playbook, settings: Settings,
                    now: dt.datetime, *, dry_run: bool = False) -> InboxReport:
    """Read the mailbox once; with `dry_run`, say what would be recorded and write nothing."""
    config = MailboxConfig.from_settings(settings)
    if config is None:
        return InboxReport(skipped=NOT_CONFIGURED)
    if dry_run:
        return _pass(factory, playbook, settings, config, now, dry_run=True)
    with lease(factory, LEASE):
        report = _pass(factory, playbook, settings, config, now, dry_run=False)
        report.sent = deliver(factory, playbook, settings, now=now).sent
    return report


def _pass(factory: sessionmaker[Session], playbook: Playbook, settings: Settings,
          config: MailboxConfig, now: dt.datetime, *, dry_run: bool) -> InboxReport:
    report = InboxReport(mailbox=config.mailbox, dry_run=dry_run)
    with factory() as session:
        cursor = session.get(MailboxCursor, config.mailbox)
        known = (cursor.uidvalidity, cursor.last_uid) if cursor else None
    with open_mailbox(config) as box:
        report.uidvalidity = box.uidvalidity
        report.reread = known is not None and known[0] != box.uidvalidity
        last_uid = known[1] if known and not report.reread else 0
        uids = box.uids_after(last_uid)
        with factory() as session:
            for start in range(0, len(uids), BATCH):
                batch = box.fetch(uids[start:start + BATCH])
                transaction = session.begin()
                try:
                    for fetched in batch:
                        report.handled.append(
                            _handle(session, playbook, settings, fetched, config.mailbox, now))
                    if batch:
                        _advance(session, config.mailbox, box.uidvalidity, batch[-1].uid, now)
                except BaseException:
                    transaction.rollback()
                    raise
                if dry_run:
                    transaction.rollback()
                else:
                    transaction.commit()
    return report


def _handle(session: Session, playbook: Playbook, settings: Settings, fetched: Fetched,
            mailbox: str, now: dt.datetime) -> Handled:
    inbound = read_message(fetched.raw, fetched.uid)
    if already_recorded(session, inbound.message_id):
        return ignored(inbound, "already recorded")
    match = match_message(session, playbook, settings, inbound)
    if match is None:
        return ignored(inbound, "concerns no onboarding (a stranger, or the team)")
    return record_message(session, playbook, inbound, match, mailbox=mailbox, now=now)


def _advance(session: Session, mailbox: str, uidvalidity: int, uid: int,
             now: dt.datetime) -> None:
    cursor = session.get(MailboxCursor, mailbox, with_for_update=True)
    if cursor is None:
        try:
            with session.begin_nested():
                session.add(MailboxCursor(mailbox=mailbox, uidvalidity=uidvalidity,
                                          last_uid=uid, updated_at=now))
            return
        except IntegrityError:  # a pass running alongside (an expired lease) created it first
            cursor = session.get(MailboxCursor, mailbox, with_for_update=True,
                                 populate_existing=True)
            assert cursor is not None
    if cursor.uidvalidity != uidvalidity:
        cursor.uidvalidity, cursor.last_uid, cursor.updated_at = uidvalidity, uid, now
    elif uid > cursor.last_uid:
        cursor.last_uid, cursor.updated_at = uid, now


def check_inbox(as_of: str | None = None, *, dry_run: bool = False) -> InboxReport:
    """One pass against the configured database and mailbox; a pass already running elsewhere
    is skipped. An unreadable mailbox raises InboxUnavailable (one line, nothing recorded)."""
    from db.lease import LeaseHeld
    from db.playbook import get_playbook
    from db.session import session_factory
    from db.settings import get_settings
    from tasks.calendar.clock import parse_as_of

    try:
        return run_inbox_sweep(session_factory(), get_playbook(), get_settings(),
                               parse_as_of(as_of), dry_run=dry_run)
    except LeaseHeld as exc:
        return InboxReport(skipped=str(exc))
