"""The reply KPIs over small frames built inline: which message a reply answers, the response
rate per template, time to first response in business days, and the bounce rate."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tasks.reporting.kpis.communication import (
    bounce_rate,
    client_messages,
    client_response_rate,
    first_responses,
    median_first_response_days,
    response_rates,
)
from tests.unit.test_kpis import CAL, WEEK, at


def comms(*rows: tuple[int, str, str, pd.Timestamp, str]) -> pd.DataFrame:
    frame = pd.DataFrame([{"onboarding_id": ob, "template": t, "status": st, "sent_at": when,
                           "audience": aud} for ob, t, st, when, aud in rows])
    frame["sent_at"] = pd.to_datetime(frame["sent_at"], utc=True)
    return frame


def replies(*rows: tuple[int, str, pd.Timestamp]) -> pd.DataFrame:
    frame = pd.DataFrame([{"onboarding_id": ob, "kind": kind, "template": None, "at": when}
                          for ob, kind, when in rows],
                         columns=["onboarding_id", "kind", "template", "at"])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame


SENT = comms(
    (1, "welcome", "sent", at(0), "client"),
    (1, "missing_info_reminder", "sent", at(1), "client"),
    (1, "missing_info_reminder", "sent", at(2), "client"),
    (1, "threshold_escalation", "sent", at(2, 1), "team"),  # not a client message
    (2, "welcome", "bounced", at(0, 1), "client"),
    (2, "intake_request", "queued", pd.NaT, "client"),  # not sent yet
    (3, "welcome", "sent", at(3), "client"),
)


def test_a_reply_answers_the_latest_client_message_before_it() -> None:
    messages = client_messages(SENT, replies(
        (1, "response", at(2, 3)),          # answers reminder 2, not the welcome or reminder 1
        (1, "followup_request", at(3)),     # a status request is not an answer
        (3, "response", at(2)),             # before anything was sent to client 3: answers none
    ))
    answered = messages.set_index(["onboarding_id", "sent_at"])["answered"]
    assert answered.to_dict() == {(1, at(0)): False, (1, at(1)): False, (1, at(2)): True,
                                  (2, at(0, 1)): False, (3, at(3)): False}


def test_response_rate_per_template_and_overall() -> None:
    messages = client_messages(SENT, replies((1, "response", at(2, 3)),
                                                  (3, "response", at(3, 2))))
    table = response_rates(messages, *WEEK)
    assert table.to_dict("records") == [
        {"template": "missing_info_reminder", "sent": 2, "answered": 1, "rate": 0.5},
        {"template": "welcome", "sent": 3, "answered": 1, "rate": pytest.approx(1 / 3)}]
    assert client_response_rate(messages, *WEEK) == pytest.approx(2 / 5)
    assert math.isnan(client_response_rate(messages, at(7), at(14)))


def test_bounce_rate_counts_client_messages_sent_in_the_period() -> None:
    messages = client_messages(SENT, replies())
    assert bounce_rate(messages, *WEEK) == pytest.approx(1 / 5)
    assert bounce_rate(messages, at(1), at(7)) == 0.0


def test_time_to_first_response_in_business_days() -> None:
    messages = client_messages(SENT, replies((1, "response", at(2, 4)),
                                                  (1, "response", at(3)),
                                                  (3, "response", at(7))))  # Mon after Thu
    first = first_responses(messages, replies((1, "response", at(2, 4)),
                                                   (1, "response", at(3)),
                                                   (3, "response", at(7))), CAL)
    assert dict(zip(first["onboarding_id"], first["days"], strict=True)) == {
        1: pytest.approx(2.5), 3: pytest.approx(2.0)}
    assert median_first_response_days(first, *WEEK) == pytest.approx(2.5)  # only client 1
    assert messages["answered"].sum() == 2
