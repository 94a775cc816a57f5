"""Every message's idempotency key, built here and nowhere else.

The outbox refuses a second row with the same key, so a key is the promise that a message goes
out once. The flow, the sweeps, the reports and the demo history all call these functions (as
`keys.stage_message(...)`, never by hand): the day two copies of a key drift apart is the day a
client gets the same message twice.
"""

from __future__ import annotations

import datetime as dt


def stage_message(template: str, onboarding_id: int) -> str:
    """A message a stage sends on entry or exit (playbook on_enter/on_exit): once per client.
    The handoff packet is one of them: a reworked packet is a new revision on the run, not a
    second mail."""
    return f"{template}:{onboarding_id}"


def missing_info_reminder(onboarding_id: int, cycle: int) -> str:
    return f"missing_info_reminder:{onboarding_id}:{cycle}"


def reminders_ended(onboarding_id: int, stage: str) -> str:
    """The owner's notice that a stage's reminder cadence ended with items still missing."""
    return f"reminders_ended:{onboarding_id}:{stage}"


def kickoff_stamp(kickoff_at: dt.datetime) -> str:
    """The kickoff's start as it appears in keys and the invite's UID (a new time, a new key)."""
    return kickoff_at.strftime("%Y%m%dT%H%M")


def kickoff_confirmation(onboarding_id: int, kickoff_at: dt.datetime) -> str:
    return f"kickoff_confirmation:{onboarding_id}:{kickoff_stamp(kickoff_at)}"


def kickoff_recap(onboarding_id: int) -> str:
    """The recap after the kickoff call: the key a stage listing kickoff_recap would use, so the
    recap goes out once whichever rule sends it."""
    return stage_message("kickoff_recap", onboarding_id)


def setup_progress_update(onboarding_id: int, cycle: int) -> str:
    return f"setup_progress_update:{onboarding_id}:{cycle}"


def blocker_escalation(blocker_id: int, level: int) -> str:
    """Step `level` (from 1) of a blocker's escalation path."""
    return f"esc:blocker:{blocker_id}:{level}"


def threshold_escalation(rule: str, onboarding_id: int, level: int) -> str:
    """Step `level` of an escalation threshold; `rule` names it (and its blocker, if any)."""
    return f"esc:{rule}:{onboarding_id}:{level}"


def weekly_review(week: str) -> str:
    return f"weekly:{week}"


def monthly_memo(month: str) -> str:
    return f"memo:{month}"


def quarterly_reset(quarter: str) -> str:
    return f"quarterly:{quarter}"


def delivery_failure(failed_key: str) -> str:
    """The owner's notice that the message under `failed_key` could not be delivered."""
    return f"delivery-failure:{failed_key}"


def portal_intake_submitted(onboarding_id: int) -> str:
    """The owner's notice that the client submitted the intake questionnaire."""
    return f"portal_intake_submitted:{onboarding_id}"


def portal_upload(onboarding_id: int, first_upload_id: int) -> str:
    """The owner's notice of files uploaded after the questionnaire was submitted."""
    return f"portal_upload:{onboarding_id}:{first_upload_id}"


def deal_refused(source: str, external_id: str) -> str:
    """The deal lane owner's notice that a won deal could not become an onboarding."""
    return f"deal-refused:{source}:{external_id}"


def client_reply(inbound_id: int) -> str:
    """The owner's notice of one client reply read from the inbox."""
    return f"client-reply:{inbound_id}"


def alert_copy(key: str, recipient: str) -> str:
    """A team notice's copy for one chat channel: the notice's key plus the channel's recipient."""
    return f"{key}>{recipient}"
