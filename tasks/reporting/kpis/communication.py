"""Communication: SLA-bound messages, status requests, and how clients answer."""

from __future__ import annotations

import math

import pandas as pd

from db.models import (
    DELIVERED,
)
from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.vectorised import business_days
from tasks.reporting.kpis.periods import in_period, median_of


def sla_adherence(communications: pd.DataFrame, start: pd.Timestamp,
                  end: pd.Timestamp) -> float:
    """Share of SLA-bound messages sent in the period with no business minute late."""
    sent = communications[communications["sla_key"].notna()
                          & communications["status"].isin(DELIVERED)
                          & in_period(communications["sent_at"], start, end)]
    if sent.empty:
        return math.nan
    return float((sent["late_business_minutes"].fillna(0) == 0).mean())


def sla_misses_by_key(communications: pd.DataFrame, start: pd.Timestamp,
                      end: pd.Timestamp) -> pd.Series:
    """Late SLA-bound messages sent in the period, per SLA key."""
    sent = communications[communications["sla_key"].notna()
                          & communications["status"].isin(DELIVERED)
                          & in_period(communications["sent_at"], start, end)]
    late = sent[sent["late_business_minutes"].fillna(0) > 0]
    return late.groupby("sla_key").size().sort_values(ascending=False)


def repeat_followup_requests(responses: pd.DataFrame, start: pd.Timestamp,
                             end: pd.Timestamp) -> int:
    """Clients who asked for status more than once in the period."""
    asks = responses[(responses["kind"] == "followup_request")
                     & in_period(responses["at"], start, end)]
    counts = asks.groupby("onboarding_id").size()
    return int((counts > 1).sum())


# -- client replies (read from the mailbox by the inbox sweep, or logged by a VA) -----------------


def client_messages(communications: pd.DataFrame, responses: pd.DataFrame) -> pd.DataFrame:
    """Every message that reached (or bounced from) a client, with whether it was answered.

    A response answers the latest client message sent to that onboarding before it, so a reply
    to the second reminder counts for the second reminder, not for the welcome.
    """
    comms = communications
    sent = comms[(comms["audience"] == "client") & comms["status"].isin(("sent", "bounced"))
                 & comms["sent_at"].notna() & comms["onboarding_id"].notna()]
    sent = sent[["onboarding_id", "template", "status", "sent_at"]].astype(
        {"onboarding_id": "int64"}).sort_values("sent_at", kind="stable").reset_index(drop=True)
    sent["message"] = sent.index
    replies = responses[(responses["kind"] == "response") & responses["at"].notna()]
    replies = replies[["onboarding_id", "at"]].astype({"onboarding_id": "int64"}).sort_values(
        "at", kind="stable")
    if sent.empty or replies.empty:
        return sent.assign(answered=False)
    answered = pd.merge_asof(replies, sent[["onboarding_id", "sent_at", "message"]],
                             left_on="at", right_on="sent_at", by="onboarding_id",
                             direction="backward")
    return sent.assign(answered=sent["message"].isin(answered["message"].dropna()))


def first_responses(messages: pd.DataFrame, responses: pd.DataFrame,
                    calendar: BusinessCalendar) -> pd.DataFrame:
    """Per client: its first response and the business days since the first message it got."""
    replies = responses[(responses["kind"] == "response") & responses["at"].notna()]
    first = replies.groupby("onboarding_id")["at"].min().rename("first_response")
    opened = messages.groupby("onboarding_id")["sent_at"].min().rename("first_message")
    both = pd.concat([opened, first], axis=1, join="inner")
    both = both[both["first_response"] >= both["first_message"]]
    return both.assign(days=business_days(calendar, both["first_message"],
                                          both["first_response"])).reset_index()


def median_first_response_days(first: pd.DataFrame, start: pd.Timestamp,
                               end: pd.Timestamp) -> float:
    """Median business days from a client's first message to their first reply, over the
    clients who first replied in the period."""
    return median_of(first.loc[in_period(first["first_response"], start, end), "days"])


def client_response_rate(messages: pd.DataFrame, start: pd.Timestamp,
                         end: pd.Timestamp) -> float:
    """Share of the client messages sent in the period that the client answered."""
    sent = messages[in_period(messages["sent_at"], start, end)]
    return float(sent["answered"].mean()) if len(sent) else math.nan


def response_rates(messages: pd.DataFrame, start: pd.Timestamp,
                   end: pd.Timestamp) -> pd.DataFrame:
    """Per template: messages sent in the period, answered, and the rate (which get answers)."""
    sent = messages[in_period(messages["sent_at"], start, end)]
    table = sent.groupby("template").agg(sent=("answered", "size"),
                                         answered=("answered", "sum")).reset_index()
    table["answered"] = table["answered"].astype(int)
    table["rate"] = table["answered"] / table["sent"]
    return table.sort_values(["rate", "template"], ascending=[False, True],
                             ignore_index=True)


def bounce_rate(messages: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> float:
    """Share of the client messages sent in the period that bounced."""
    sent = messages[in_period(messages["sent_at"], start, end)]
    return float((sent["status"] == "bounced").mean()) if len(sent) else math.nan
