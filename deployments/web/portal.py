"""The client portal's routes: status page, questionnaire (save, resume, submit), file downloads.

Every route starts from the link in its path. GET and HEAD only read: a mail scanner opening a
link changes nothing. A POST writes in one transaction through tasks/portal (the same service
layer and guardrails as the CLI); after a submission the client's run is woken exactly as
`handoff artifact add` wakes it.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from db.models import PortalUpload, utcnow
from db.playbook import Playbook, get_playbook
from db.session import session_factory, transaction
from db.validation import HandoffError
from deployments.web.pages import not_found_page, render, too_many
from deployments.web.security import CSRF_PARAM, issue_csrf
from tasks.portal import intake, links, notices, view
from tasks.portal.uploads import describe_types

log = logging.getLogger("handoff.portal")
TEXT_PART_BYTES = 100 * 1024  # the longest text answer (20,000 characters) in UTF-8, with room


class FileTooLarge(MultiPartException):
    """One uploaded file went over the per-file cap while streaming in."""


class CappedMultiPartParser(MultiPartParser):
    """Starlette's streaming multipart parser, plus a cap on every single file's size."""

    def __init__(self, *args: Any, max_file_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_file_size = max_file_size
        self._file_bytes = 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._file_bytes += end - start
            if self._file_bytes > self.max_file_size:
                raise FileTooLarge(f"a file is over the {self.max_file_size // (1024 * 1024)} MB "
                                   "limit; nothing was saved")
        super().on_part_data(data, start, end)


# -- finding the client ------------------------------------------------------------------


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _client_id(request: Request) -> int | Response:
    """The onboarding this link opens, or the one not-found page (429 for a guesser)."""
    guesses = request.app.state.guesses
    wait = guesses.blocked(_address(request))
    if wait:
        return too_many(request, wait)
    token = request.path_params["token"]
    found = await run_in_threadpool(_resolve, token)
    if found is None:
        guesses.miss(_address(request))
        return not_found_page(request)
    return found


def _resolve(token: str) -> int | None:
    with transaction(read_only=True) as session:
        ob = links.resolve(session, get_playbook(), token)
        return ob.id if ob else None


def _form_action(request: Request, suffix: str) -> str:
    token = request.path_params["token"]
    path = f"/c/{token}{suffix}"
    return f"{path}?{CSRF_PARAM}={issue_csrf(request.app.state.form_key, path)}"


def _page_urls(request: Request) -> dict[str, str]:
    token = request.path_params["token"]
    return {"status": f"/c/{token}", "intake": f"/c/{token}/intake",
            "files": f"/c/{token}/files", "save": _form_action(request, "/intake"),
            "seen": _form_action(request, "/seen")}


# -- status page -------------------------------------------------------------------------


async def status_page(request: Request) -> Response:
    """Where the client stands, in their words."""
    found = await _client_id(request)
    if isinstance(found, Response):
        return found
    context = await run_in_threadpool(_status_context, found)
    flash = "submitted" if request.query_params.get("submitted") else None
    return render(request, "status.html", {**context, "urls": _page_urls(request),
                                           "flash": flash})


def _status_context(onboarding_id: int) -> dict[str, Any]:
    playbook = get_playbook()
    with transaction(read_only=True) as session:
        from tasks.onboarding.records import get_onboarding

        ob = get_onboarding(session, onboarding_id)
        return view.client_page(session, playbook, ob, utcnow())


# -- the questionnaire -------------------------------------------------------------------


async def intake_page(request: Request) -> Response:
    """The questionnaire with the saved answers filled in."""
    found = await _client_id(request)
    if isinstance(found, Response):
        return found
    context = await run_in_threadpool(_intake_context, found, None, {})
    flash = next((f for f in ("saved", "incomplete") if request.query_params.get(f)), None)
    return render(request, "intake.html", {**context, "urls": _page_urls(request),
                                           "flash": flash})


def _intake_context(onboarding_id: int, posted: dict[str, intake.Answer] | None,
                    errors: dict[str, str]) -> dict[str, Any]:
    playbook = get_playbook()
    questionnaire = intake.questionnaire_of(playbook)
    with transaction(read_only=True) as session:
        from tasks.onboarding.records import get_onboarding

        ob = get_onboarding(session, onboarding_id)
        saved = intake.answers(session, onboarding_id)
        uploaded = intake.files(session, onboarding_id)
        done = intake.submission(session, onboarding_id)
        client = {"name": ob.client_name, "active": ob.status == "active"}
    values = {**saved, **(posted or {})}
    missing = set(intake.missing_required(questionnaire, saved, {f.field_key for f in uploaded}))
    sections = []
    for section in questionnaire.sections:
        fields = []
        for item in section.fields:
            value = values.get(item.key)
            fields.append({
                "key": item.key, "label": item.label, "kind": item.kind,
                "required": item.required, "help": item.help, "choices": item.choices,
                "limit": item.limit, "max_files": item.max_files,
                "value": value if value is not None else ("" if item.kind != "multi_choice"
                                                          else []),
                "error": errors.get(item.key), "missing": item.key in missing,
                "accept": ",".join(f".{k}" for k in item.accept),
                "accept_words": describe_types(list(item.accept)) if item.accept else "",
                "files": [{"id": f.id, "name": f.original_name, "size": f.size}
                          for f in uploaded if f.field_key == item.key],
            })
        sections.append({"key": section.key, "title": section.title, "intro": section.intro,
                         "fields": fields})
    return {"client": client, "questionnaire": {"title": questionnaire.title,
                                                "intro": questionnaire.intro},
            "sections": sections, "submitted": done is not None,
            "missing_count": len(missing), "form_error": errors.get("_form")}


async def intake_post(request: Request) -> Response:
    """Save (and maybe submit) the questionnaire; PRG on success, the form again on errors."""
    found = await _client_id(request)
    if isinstance(found, Response):
        return found
    playbook = get_playbook()
    try:
        questionnaire = intake.questionnaire_of(playbook)
        posted, incoming, action = await _read_form(request, playbook)
    except FileTooLarge as exc:
        return _refused(request, found, str(exc), 413)
    except (MultiPartException, HandoffError) as exc:
        return _refused(request, found, f"the form could not be read: {exc}", 400)
    try:
        result = await run_in_threadpool(_save, found, posted, incoming, action == "submit")
    except HandoffError as exc:
        return _refused(request, found, str(exc), 400)
    finally:
        for upload in incoming:
            upload.handle.close()
    if result.errors:
        shown = {k: v for k, v in posted.items() if questionnaire.field(k) is not None}
        context = await run_in_threadpool(_intake_context, found, shown, result.errors)
        return render(request, "intake.html", {**context, "urls": _page_urls(request),
                                               "flash": "errors",
                                               "error_count": len(result.errors)}, status=400)
    token = request.path_params["token"]
    background = BackgroundTask(_after_save, found, result.submitted,
                                bool(result.uploaded and result.already_submitted))
    if result.submitted or (action == "submit" and result.already_submitted):
        return RedirectResponse(f"/c/{token}?submitted=1", status_code=303, background=background)
    flag = "incomplete" if action == "submit" else "saved"
    return RedirectResponse(f"/c/{token}/intake?{flag}=1", status_code=303,
                            background=background)


def _refused(request: Request, onboarding_id: int, message: str, status: int) -> Response:
    context = _intake_context(onboarding_id, None, {"_form": message})
    return render(request, "intake.html", {**context, "urls": _page_urls(request),
                                           "flash": "errors", "error_count": 1}, status=status)


async def _read_form(request: Request, playbook: Playbook
                     ) -> tuple[dict[str, intake.Answer], list[intake.IncomingFile], str]:
    """The posted answers (lists for multi-choice), files and the button pressed; streamed."""
    settings = request.app.state.settings
    questionnaire = intake.questionnaire_of(playbook)
    limit_fields = 4 * len(questionnaire.fields) + 20
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        parser = CappedMultiPartParser(
            request.headers, request.stream(), max_files=sum(
                f.max_files for f in questionnaire.fields if f.kind == "file"),
            max_fields=limit_fields, max_part_size=TEXT_PART_BYTES,
            max_file_size=settings.portal_max_file_bytes)
        form = await parser.parse()
    elif content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form(max_files=0, max_fields=limit_fields,
                                  max_part_size=TEXT_PART_BYTES)
    else:
        raise HandoffError("expected a form (multipart/form-data or urlencoded)")
    posted: dict[str, list[str]] = {}
    incoming: list[intake.IncomingFile] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if value.filename or (value.size or 0) > 0:
                incoming.append(intake.IncomingFile(field_key=key, filename=value.filename,
                                                    handle=value.file))  # type: ignore[arg-type]
            else:
                await value.close()
            continue
        posted.setdefault(key, []).append(value)
    action = (posted.pop("action", ["save"]) or ["save"])[-1]
    answers: dict[str, intake.Answer] = {}
    for key, values in posted.items():
        item = questionnaire.field(key)
        if item is None:
            continue  # unknown names are ignored, never stored
        answers[key] = values if item.kind == "multi_choice" or len(values) > 1 else values[0]
    return answers, incoming, action


def _save(onboarding_id: int, posted: dict[str, intake.Answer],
          incoming: list[intake.IncomingFile], submit: bool) -> intake.SaveResult:
    playbook = get_playbook()
    settings = _settings()
    now = utcnow()
    result = intake.SaveResult()
    try:
        with transaction() as session:
            result = intake.save(session, playbook, onboarding_id, posted, incoming,
                                 upload_dir=settings.uploads_dir, submit=submit, now=now)
            if result.errors:
                return result  # refused before anything was written
            from tasks.onboarding.records import get_onboarding

            links.mark_opened(session, get_onboarding(session, onboarding_id), now)
            notices.queue_owner_notice(session, playbook, onboarding_id, result, now)
    except BaseException:
        from tasks.portal.uploads import discard

        discard(result.stored)
        raise
    return result


def _settings() -> Any:
    from db.settings import get_settings

    return get_settings()


def _after_save(onboarding_id: int, submitted: bool, notify_upload: bool) -> None:
    """After the response: send the owner's notice now and wake the client's run."""
    if not (submitted or notify_upload):
        return
    from tasks.mail.delivery import deliver

    try:
        deliver(session_factory(), get_playbook(), _settings(), now=utcnow(),
                onboarding_id=onboarding_id)
    except Exception:  # the outbox keeps it queued; the next sweep or run delivers it
        log.exception("delivering the portal notice for onboarding %s failed", onboarding_id)
    if not submitted:
        return
    from tasks.portal.publish import publish_answers
    from tasks.prefect.wake import nudge_run

    try:
        log.info("onboarding %s: %s", onboarding_id, nudge_run(onboarding_id))
        publish_answers(onboarding_id)
    except Exception:  # the record is kept; reconcile resumes the run later
        log.exception("waking the run of onboarding %s failed", onboarding_id)


# -- files and the last-opened beacon ----------------------------------------------------


async def download(request: Request) -> Response:
    """A file this client uploaded, as a download only."""
    found = await _client_id(request)
    if isinstance(found, Response):
        return found
    upload_id = request.path_params["upload_id"]
    row = await run_in_threadpool(_upload_row, found, upload_id)
    if row is None:
        return not_found_page(request)
    path = _settings().uploads_dir / str(found) / row.stored_name
    if not path.is_file():
        return not_found_page(request)
    return FileResponse(path, media_type=row.content_type, filename=row.original_name,
                        content_disposition_type="attachment",
                        headers={"Content-Security-Policy": "sandbox; default-src 'none'"})


def _upload_row(onboarding_id: int, upload_id: int) -> PortalUpload | None:
    with transaction(read_only=True) as session:
        row = session.get(PortalUpload, upload_id)
        return row if row is not None and row.onboarding_id == onboarding_id else None


async def seen(request: Request) -> Response:
    """The page's script says a person's browser has it open: last-opened, at most once a
    minute. A mail scanner that only fetches the link never runs it, so it never counts."""
    found = await _client_id(request)
    if isinstance(found, Response):
        return found
    await run_in_threadpool(_mark_seen, found)
    return Response(status_code=204)


def _mark_seen(onboarding_id: int) -> None:
    with transaction() as session:
        from tasks.onboarding.records import get_onboarding

        links.mark_opened(session, get_onboarding(session, onboarding_id), utcnow())


routes = [
    Route("/c/{token}", status_page, methods=["GET", "HEAD"]),
    Route("/c/{token}/intake", intake_page, methods=["GET", "HEAD"]),
    Route("/c/{token}/intake", intake_post, methods=["POST"]),
    Route("/c/{token}/files/{upload_id:int}", download, methods=["GET", "HEAD"]),
    Route("/c/{token}/seen", seen, methods=["POST"]),
]
