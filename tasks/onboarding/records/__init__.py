"""The service layer: every write to the record of truth goes through here, guardrails included.

Functions take the caller's Session (the caller owns the transaction) and plain values. A refused
action raises a HandoffError subclass whose message explains itself; nothing is written, because
every check runs before the first change and the caller rolls the transaction back.

Callers use it as one door, `records.advance(...)`, `records.record_artifact(...)`; inside, one
module per kind of write: core (the event log, reading a client, date checks), stages (what a
stage needs, leaving it, the next action), create (a closed deal becomes an onboarding), facts
(what is recorded about one client) and team (the founder's and the review loop's records).
"""

from tasks.onboarding.records.core import (
    check_close,
    check_happened,
    get_onboarding,
    log_event,
)
from tasks.onboarding.records.create import NewOnboarding, create_onboarding
from tasks.onboarding.records.facts import (
    log_client_response,
    log_incident,
    log_sla_exception,
    open_blocker,
    record_artifact,
    record_qa,
    resolve_blocker,
    schedule_kickoff,
)
from tasks.onboarding.records.stages import (
    advance,
    apply_playbook,
    exit_problems,
    missing_items,
    next_action,
    open_blockers,
    recorded_keys,
    recorded_times,
)
from tasks.onboarding.records.team import (
    close_action,
    log_interruption,
    open_action,
    record_audit,
    record_founder_decision,
    set_owner_away,
)

__all__ = [
    "NewOnboarding", "advance", "apply_playbook", "check_close", "check_happened", "close_action",
    "create_onboarding", "exit_problems", "get_onboarding", "log_client_response", "log_event",
    "log_incident", "log_interruption", "log_sla_exception", "missing_items", "next_action",
    "open_action", "open_blocker", "open_blockers", "record_artifact", "record_audit",
    "record_founder_decision", "record_qa", "recorded_keys", "recorded_times", "resolve_blocker",
    "schedule_kickoff", "set_owner_away",
]
