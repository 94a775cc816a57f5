"""The intake questionnaire's answers: check, save, submit. All or nothing, like every write.

A save checks every posted answer first; one bad answer refuses the whole post with a line per
field and nothing is written (files included). A submit saves, then, if every required answer is
there, records the questionnaire's artifacts with the client as actor through the same service
layer as the CLI (tasks/onboarding/records/) and queues one notice to the owner. The submission
row is unique per client, so two tabs submitting at once record it once.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import IntakeAnswer, IntakeSubmission, PortalUpload
from db.playbook import Playbook
from db.questionnaire import QuestionField, Questionnaire
from db.validation import HandoffError, clean_email, clean_text, parse_date
from tasks.onboarding import records
from tasks.portal import uploads

CLIENT_ACTOR = "client (portal)"
YES_NO = ("yes", "no")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)

Answer = str | list[str]


@dataclass(frozen=True)
class IncomingFile:
    """One file from the form, still in its temporary spool."""

    field_key: str
    filename: str | None
    handle: BinaryIO


@dataclass
class SaveResult:
    """What a save or submit did; `errors` maps a field key to its one-line reason."""

    errors: dict[str, str] = field(default_factory=dict)
    saved: list[str] = field(default_factory=list)
    uploaded: list[int] = field(default_factory=list)
    submitted: bool = False
    already_submitted: bool = False
    missing: list[str] = field(default_factory=list)  # required field keys without an answer
    stored: list[uploads.StoredFile] = field(default_factory=list)  # to discard on rollback


def questionnaire_of(playbook: Playbook) -> Questionnaire:
    """The playbook's questionnaire, or a clear refusal when the playbook has none."""
    if playbook.portal is None:
        raise HandoffError("the playbook has no portal.questionnaire section")
    return playbook.portal.questionnaire


def clean_answer(item: QuestionField, raw: Answer) -> Answer | None:
    """One answer checked against its field; None means "no answer". Raises HandoffError."""
    name = f"'{item.label}'"
    values = [raw] if isinstance(raw, str) else list(raw)
    values = [v for v in values if v is not None and v.strip()]
    if item.kind == "multi_choice":
        chosen = list(dict.fromkeys(v.strip() for v in values))
        for value in chosen:
            if value not in item.choices:
                raise HandoffError(f"{name}: {value[:60]!r} is not one of the choices")
        return chosen or None
    if len(values) > 1:
        raise HandoffError(f"{name} takes one answer, got {len(values)}")
    if not values:
        return None
    value = values[0]
    if item.kind == "long_text":
        # Browsers send a textarea's line breaks as CRLF (the HTML form encoding): one line
        # break, not a control character.
        value = value.replace("\r\n", "\n")
    if item.kind in ("text", "long_text"):
        return clean_text(value, name, max_len=item.limit, multiline=item.kind == "long_text")
    if item.kind == "email":
        return clean_email(value, name)
    if item.kind == "url":
        text = clean_text(value, name, max_len=item.limit, multiline=False) or ""
        if not _URL.match(text):
            raise HandoffError(f"{name} {text[:60]!r} is not a web address like "
                               "https://example.com")
        return text
    if item.kind == "date":
        parsed = parse_date(value, name)
        return parsed.isoformat() if parsed else None
    if item.kind == "choice":
        value = value.strip()
        if value not in item.choices:
            raise HandoffError(f"{name}: {value[:60]!r} is not one of the choices")
        return value
    if item.kind == "yes_no":
        value = value.strip().lower()
        if value not in YES_NO:
            raise HandoffError(f"{name}: expected yes or no, got {value[:20]!r}")
        return value
    raise HandoffError(f"{name} takes a file, not text")


def answers(session: Session, onboarding_id: int) -> dict[str, Answer]:
    """The saved answers by field key."""
    return {a.field_key: a.value for a in session.scalars(
        select(IntakeAnswer).where(IntakeAnswer.onboarding_id == onboarding_id))}


def files(session: Session, onboarding_id: int) -> list[PortalUpload]:
    """The client's uploads, oldest first."""
    return list(session.scalars(select(PortalUpload).where(
        PortalUpload.onboarding_id == onboarding_id).order_by(PortalUpload.id)))


def submission(session: Session, onboarding_id: int) -> IntakeSubmission | None:
    """The submitted questionnaire, if it was submitted."""
    return session.scalars(select(IntakeSubmission).where(
        IntakeSubmission.onboarding_id == onboarding_id)).first()


def missing_required(questionnaire: Questionnaire, saved: dict[str, Answer],
                     uploaded: set[str]) -> list[str]:
    """Required fields with no answer (a file field needs at least one file)."""
    return [f.key for f in questionnaire.fields if f.required
            and (f.key not in uploaded if f.kind == "file" else not saved.get(f.key))]


def save(session: Session, playbook: Playbook, onboarding_id: int, posted: dict[str, Answer],
         incoming: list[IncomingFile], *, upload_dir: Path, submit: bool,
         now: dt.datetime) -> SaveResult:
    """Check and save posted answers and files; with `submit`, submit when complete."""
    questionnaire = questionnaire_of(playbook)
    ob = records.get_onboarding(session, onboarding_id, for_update=True)  # one writer per client
    result = SaveResult()
    done = submission(session, onboarding_id)
    if ob.status != "active":
        raise HandoffError(f"this onboarding is {ob.status}; the questionnaire is closed")
    text_answers = {k: v for k, v in posted.items() if questionnaire.field(k) is not None}
    if done is not None and any(_changes(session, onboarding_id, text_answers, questionnaire)):
        result.errors["_form"] = ("the questionnaire was submitted on "
                                  f"{done.submitted_at:%Y-%m-%d}; answers can no longer change "
                                  "here (files can still be added); ask your owner to change one")
        return result
    cleaned: dict[str, Answer | None] = {}
    for key, raw in text_answers.items():
        item = questionnaire.field(key)
        assert item is not None
        if item.kind == "file":
            continue
        try:
            cleaned[key] = clean_answer(item, raw)
        except HandoffError as exc:
            result.errors[key] = str(exc)
    existing_files = files(session, onboarding_id)
    checked = _check_files(questionnaire, incoming, existing_files, result.errors)
    if result.errors:
        return result
    stored = result.stored
    try:
        for item, kind, upload in checked:
            written = uploads.store(upload.handle, upload_dir / str(onboarding_id), kind)
            stored.append(written)
            row = PortalUpload(onboarding_id=onboarding_id, field_key=item.key,
                               original_name=uploads.clean_filename(upload.filename),
                               stored_name=written.stored_name,
                               content_type=uploads.CONTENT_TYPES[kind], size=written.size,
                               sha256=written.sha256, uploaded_at=now, notified=False)
            session.add(row)
            session.flush()
            result.uploaded.append(row.id)
        result.saved = _write_answers(session, onboarding_id, cleaned, now)
        if result.saved or result.uploaded:
            records.log_event(session, "intake_saved", actor=CLIENT_ACTOR,
                              onboarding_id=onboarding_id, at=now, fields=result.saved,
                              uploads=result.uploaded)
        if done is not None:
            result.already_submitted = True
        elif submit:
            _submit(session, playbook, questionnaire, onboarding_id, now, result)
        session.flush()
    except BaseException:
        uploads.discard(stored)
        raise
    return result


def _changes(session: Session, onboarding_id: int, posted: dict[str, Answer],
             questionnaire: Questionnaire) -> list[str]:
    saved = answers(session, onboarding_id)
    changed = []
    for key, raw in posted.items():
        item = questionnaire.field(key)
        if item is None or item.kind == "file":
            continue
        try:
            value = clean_answer(item, raw)
        except HandoffError:
            changed.append(key)
            continue
        if value != saved.get(key):
            changed.append(key)
    return changed


def _check_files(questionnaire: Questionnaire, incoming: list[IncomingFile],
                 existing: list[PortalUpload], errors: dict[str, str]
                 ) -> list[tuple[QuestionField, str, IncomingFile]]:
    checked: list[tuple[QuestionField, str, IncomingFile]] = []
    counts: dict[str, int] = {}
    for row in existing:
        counts[row.field_key] = counts.get(row.field_key, 0) + 1
    for upload in incoming:
        item = questionnaire.field(upload.field_key)
        if item is None or item.kind != "file":
            continue
        name = uploads.clean_filename(upload.filename)
        kind = uploads.sniff(upload.handle)
        if kind is None or kind not in item.accept:
            errors[item.key] = (f"'{item.label}': {name!r} is not a "
                                f"{uploads.describe_types(item.accept)} file (checked from its "
                                "content, not its name)")
            continue
        counts[item.key] = counts.get(item.key, 0) + 1
        if counts[item.key] > item.max_files:
            errors[item.key] = f"'{item.label}' takes at most {item.max_files} file(s)"
            continue
        checked.append((item, kind, upload))
    return checked


def _write_answers(session: Session, onboarding_id: int, cleaned: dict[str, Answer | None],
                   now: dt.datetime) -> list[str]:
    saved = answers(session, onboarding_id)
    changed = []
    for key, value in cleaned.items():
        if value == saved.get(key):
            continue
        changed.append(key)
        session.execute(delete(IntakeAnswer).where(IntakeAnswer.onboarding_id == onboarding_id,
                                                   IntakeAnswer.field_key == key))
        if value is not None:
            session.add(IntakeAnswer(onboarding_id=onboarding_id, field_key=key, value=value,
                                     saved_at=now))
    session.flush()
    return changed


def recorded_on_submit(questionnaire: Questionnaire) -> list[str]:
    """The artifacts a submitted questionnaire records (its own and its sections' `records`)."""
    keys = list(questionnaire.records) + [k for s in questionnaire.sections for k in s.records]
    return list(dict.fromkeys(keys))


def _submit(session: Session, playbook: Playbook, questionnaire: Questionnaire,
            onboarding_id: int, now: dt.datetime, result: SaveResult) -> None:
    saved = answers(session, onboarding_id)
    uploaded = {row.field_key for row in files(session, onboarding_id)}
    result.missing = missing_required(questionnaire, saved, uploaded)
    if result.missing:
        return
    row = IntakeSubmission(onboarding_id=onboarding_id, submitted_at=now, answers=saved)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        result.already_submitted = True  # another tab submitted a moment ago
        return
    note = "submitted by the client through the portal"
    keys = recorded_on_submit(questionnaire)
    for key in keys:
        records.record_artifact(session, playbook, onboarding_id, key, by=CLIENT_ACTOR, at=now,
                                note=note)
    records.log_event(session, "intake_submitted", actor=CLIENT_ACTOR,
                      onboarding_id=onboarding_id, at=now, recorded=keys)
    result.submitted = True


def answer_rows(questionnaire: Questionnaire, saved: dict[str, Answer],
                uploaded: list[PortalUpload]) -> list[dict[str, Any]]:
    """Sections with (label, answer text) rows, for the packet, the CLI and the run artifact."""
    by_field: dict[str, list[str]] = {}
    for row in uploaded:
        by_field.setdefault(row.field_key, []).append(
            f"{row.original_name} ({row.content_type.split('/')[-1]}, {row.size:,} bytes)")
    out = []
    for section in questionnaire.sections:
        rows = []
        for item in section.fields:
            if item.kind == "file":
                value = "; ".join(by_field.get(item.key, [])) or "—"
            else:
                answer = saved.get(item.key)
                value = (", ".join(answer) if isinstance(answer, list) else answer) or "—"
            rows.append((item.label, value))
        out.append({"key": section.key, "title": section.title, "rows": rows})
    return out
