"""What the owner hears from the portal: one notice per submission, one per later upload.

Files uploaded while the questionnaire is still open are listed in the submission notice rather
than announced one by one (a client filling in the form would otherwise send the owner a mail per
file); files added after submission are announced at once, one notice per upload.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import PortalUpload
from db.playbook import Playbook
from tasks.comms import keys
from tasks.mail.outbox import Draft, business_context, enqueue, owners_away
from tasks.onboarding import records
from tasks.portal import intake


def _owner_on_duty(session: Session, playbook: Playbook, onboarding_id: int,
                   now: dt.datetime) -> str:
    ob = records.get_onboarding(session, onboarding_id)
    if owners_away(session, [ob.owner_email], now, tz=playbook.calendar.tz):
        return ob.backup_email
    return ob.owner_email


def queue_owner_notice(session: Session, playbook: Playbook, onboarding_id: int,
                       result: intake.SaveResult, now: dt.datetime) -> str | None:
    """Queue the owner's notice for what this save did; returns its key, or None."""
    if result.submitted:
        template, key = "portal_intake_submitted", keys.portal_intake_submitted(onboarding_id)
    elif result.uploaded and result.already_submitted:
        template, key = "portal_upload", keys.portal_upload(onboarding_id,
                                                           min(result.uploaded))
    else:
        return None
    pending = list(session.scalars(select(PortalUpload).where(
        PortalUpload.onboarding_id == onboarding_id, PortalUpload.notified.is_(False))
        .order_by(PortalUpload.id)))
    ob = records.get_onboarding(session, onboarding_id)
    questionnaire = intake.questionnaire_of(playbook)
    sections = intake.answer_rows(questionnaire, intake.answers(session, onboarding_id),
                                  intake.files(session, onboarding_id))
    enqueue(session, playbook, Draft(
        onboarding_id=onboarding_id, template=template,
        recipients=[_owner_on_duty(session, playbook, onboarding_id, now)], key=key,
        context={"business": business_context(playbook),
                 "client": {"id": ob.id, "name": ob.client_name, "offer": ob.offer},
                 "sections": sections,
                 "files": [{"name": f.original_name, "type": f.content_type, "size": f.size}
                           for f in pending]}), now=now)
    if pending:
        session.execute(update(PortalUpload).where(PortalUpload.id.in_([f.id for f in pending]))
                        .values(notified=True))
    return key
