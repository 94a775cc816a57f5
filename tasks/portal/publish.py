"""The client's answers where the VA reads them: markdown for the CLI and a Prefect artifact."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.orm import Session

from db.models import utcnow
from db.playbook import Playbook, get_playbook
from db.session import transaction
from tasks.comms.context import local_time
from tasks.mail.render import render_page
from tasks.onboarding import records
from tasks.portal import intake


def answers_markdown(session: Session, playbook: Playbook, onboarding_id: int) -> str:
    """The questionnaire as markdown, every client value escaped (inert in the Prefect UI)."""
    ob = records.get_onboarding(session, onboarding_id)
    done = intake.submission(session, onboarding_id)
    status = (f"submitted {local_time(playbook, done.submitted_at)}" if done
              else "not submitted yet (saved answers so far)")
    sections = intake.answer_rows(intake.questionnaire_of(playbook),
                                  intake.answers(session, onboarding_id),
                                  intake.files(session, onboarding_id))
    return render_page("intake_answers.md", {"client": {"name": ob.client_name},
                                             "status": status, "sections": sections})


def publish_answers(onboarding_id: int) -> str | None:
    """Attach the answers to the client's flow run as a markdown artifact; None without a run."""
    from prefect import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    from tasks.prefect.runs import prefect_settings, server_reachable

    playbook = get_playbook()
    with transaction() as session:
        ob = records.get_onboarding(session, onboarding_id)
        run_id = ob.flow_run_id
        markdown = answers_markdown(session, playbook, onboarding_id)
    if run_id is None or not server_reachable():
        return None
    key = f"intake-answers-{onboarding_id}"
    with prefect_settings(), get_client(sync_client=True) as client:
        client.create_artifact(ArtifactCreate(
            key=key, type="markdown", data=markdown, flow_run_id=UUID(run_id),
            description=f"Intake questionnaire answers, {utcnow():%Y-%m-%d %H:%M} UTC"))
    return key
