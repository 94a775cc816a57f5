"""The inbox-sweep deployment on the real Prefect server and runner, reading the real IMAP
server: a client at intake gets reminders, answers the last one in the mailbox, and after one
inbox sweep the no-response escalation that would have fired does not (it does for a client
who stayed silent)."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from tests.flow.conftest import Stack
from tests.flow.test_onboarding_flow import db_value, wait_until
from tests.flow.test_report_flows import _run, _state
from tests.mail.messages import threaded_reply


def _intake_client(stack: Stack, name: str) -> int:
    contact = f"ops@{name.lower().replace(' ', '')}.example"
    result = stack.cli("onboard", "--client", name, "--segment", "smb", "--offer", "Growth",
                       "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
                       "--contact", contact, "--terms", "SOW v2 signed, net 30",
                       "--scope", "SEO + ads, 3 months", "--json")
    ob_id = int(json.loads(result.stdout)["id"])
    wait_until(f"{name} in intake with its intake request sent", lambda: db_value(
        stack, "SELECT count(*) FROM communications WHERE onboarding_id = :i AND "
        "template = 'intake_request' AND status = 'sent'", i=ob_id) == 1, timeout=120)
    return ob_id


def _flow_logs(stack: Stack, run_id: str) -> str:
    logs = httpx.post(f"{stack.api_url}/logs/filter", timeout=10,
                      json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    return "\n".join(entry["message"] for entry in logs.json())


@pytest.mark.flow
def test_a_reply_read_by_the_inbox_sweep_stops_the_escalation(stack: Stack) -> None:
    assert stack.imap is not None and stack.mailbox is not None
    replier = _intake_client(stack, "Replying Co")
    silent = _intake_client(stack, "Silent Co")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first, second = now + dt.timedelta(hours=25), now + dt.timedelta(hours=50)
    for at in (first, second):  # the reminder cadence, as the hourly sweep would run it
        stack.cli("sweep", "--as-of", at.isoformat())
    reminders = db_value(stack, "SELECT count(*) FROM communications WHERE template = "
                         "'missing_info_reminder' AND status = 'sent' AND onboarding_id IN "
                         "(:a, :b)", a=replier, b=silent)
    assert reminders == 4

    message_id = db_value(stack, "SELECT message_id FROM communications WHERE onboarding_id = "
                          ":i AND template = 'missing_info_reminder' AND cycle = 2", i=replier)
    subject = db_value(stack, "SELECT subject FROM communications WHERE message_id = :m",
                       m=message_id)
    stack.imap.append(stack.mailbox, threaded_reply(
        sender="ops@replyingco.example", answering=message_id, earlier=[], subject=subject,
        at=second + dt.timedelta(hours=1)))

    inbox = _run(stack, "inbox-sweep/inbox-sweep",
                 {"as_of": (second + dt.timedelta(hours=1, minutes=5)).isoformat()})
    wait_until("the inbox sweep finished",
               lambda: _state(stack, inbox) in ("COMPLETED", "FAILED", "CRASHED"), timeout=180)
    assert _state(stack, inbox) == "COMPLETED", _flow_logs(stack, inbox)
    # The runner ships its logs in batches, so the line may land just after the run completes.
    wait_until("the sweep's log line", lambda: f"onboarding {replier} (thread)"
               in _flow_logs(stack, inbox), timeout=60)
    assert db_value(stack, "SELECT count(*) FROM client_responses WHERE onboarding_id = :i",
                    i=replier) == 1

    # When "no response after 2 reminder cycles" falls due for both clients.
    due = second + dt.timedelta(hours=49)
    escalation = _run(stack, "escalation-sweep/escalation-sweep", {"as_of": due.isoformat()})
    wait_until("the escalation sweep finished",
               lambda: _state(stack, escalation) in ("COMPLETED", "FAILED", "CRASHED"),
               timeout=180)
    assert _state(stack, escalation) == "COMPLETED"

    def no_response(ob_id: int) -> int:
        return int(db_value(stack, "SELECT count(*) FROM communications WHERE onboarding_id = "
                            ":i AND idempotency_key LIKE 'esc:no_response:%'", i=ob_id))
    assert no_response(silent) >= 1  # the escalation was due
    assert no_response(replier) == 0  # and the reply stopped it
    owner_notices = [m for m in stack.smtp.messages
                     if str(m.message["Subject"]).startswith("Reply from Replying Co")]
    assert len(owner_notices) == 1 and list(owner_notices[0].rcpt_tos) == [
        "va@northwind.example"]
    assert not any("\\Seen" in f for f in stack.imap.flags(stack.mailbox).values())
