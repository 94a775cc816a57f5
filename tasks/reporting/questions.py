"""The blueprint's six weekly audit questions, answered from the week's data."""

from __future__ import annotations

import pandas as pd

from db.playbook import Playbook
from tasks.mail.render import catalog
from tasks.reporting.kpis.blockers import blockers_by_type
from tasks.reporting.kpis.completeness import missing_at_handoff_qa
from tasks.reporting.kpis.speed import stage_aging
from tasks.reporting.kpis.table import Context

Answer = dict[str, str]  # question, answer, owner (the lane owner who acts on it)


def audit_answers(ctx: Context, playbook: Playbook, start: pd.Timestamp,
                  end: pd.Timestamp) -> list[Answer]:
    """The blueprint's six weekly audit questions, answered from the week's data, with owners."""
    return [question(ctx, playbook, start, end) for question in (
        _stage_aging, _blocker_types, _clarifications, _missing_artifacts, _escalations,
        _interrupting_lane)]


def _answer(question: str, answer: str, owner: object) -> Answer:
    return {"question": question, "answer": answer, "owner": str(owner)}


def _stage_aging(ctx: Context, playbook: Playbook, start: pd.Timestamp,
                 end: pd.Timestamp) -> Answer:
    f, cal, lanes = ctx.frames, ctx.calendar, playbook.lanes
    prev = start - pd.Timedelta(days=7)
    this = stage_aging(f.onboardings, ctx.stays, cal, start, end).set_index("stage")
    before = stage_aging(f.onboardings, ctx.stays, cal, prev, start).set_index("stage")
    change = (this["median_days"] - before["median_days"]).dropna()
    if len(change) and change.max() > 0:
        stage = str(change.idxmax())
        answer = (f"{playbook.stage(stage).name}: {this.loc[stage, 'median_days']:.1f} business "
                  f"days median, up {change.max():.1f} on last week")
        owner = lanes[playbook.stage(stage).lane].owner
    else:
        stage_now = this["median_age_now"].dropna()
        answer = "no stage aged more than last week" if not len(stage_now) else (
            f"no stage aged more than last week; oldest now: "
            f"{playbook.stage(str(stage_now.idxmax())).name}")
        owner = lanes["A"].owner
    return _answer("Which stage had the highest aging increase this week?", answer, owner)


def _blocker_types(ctx: Context, playbook: Playbook, start: pd.Timestamp,
                   end: pd.Timestamp) -> Answer:
    question, lanes = "Which blocker type appeared most often?", playbook.lanes
    table = blockers_by_type(ctx.frames.blockers, ctx.calendar, start, end)
    table = table[table["opened"] > 0]
    if not len(table):
        return _answer(question, "no blockers opened this week", lanes["B"].owner)
    top = table.iloc[0]
    kind = playbook.blockers.get(str(top["type"]))
    return _answer(question, f"{kind.label if kind else top['type']}: {top['opened']} opened",
                   lanes[kind.lane if kind else "B"].owner)


def _clarifications(ctx: Context, playbook: Playbook, start: pd.Timestamp,
                    end: pd.Timestamp) -> Answer:
    responses = ctx.frames.responses
    month = start - pd.Timedelta(days=21)
    asks = responses[(responses["kind"] == "clarification") & (responses["at"] >= month)
                     & (responses["at"] < end)]
    counts = asks["template"].dropna().value_counts()
    return _answer(
        "Which template generated the most client clarification requests?",
        (f"{counts.index[0]}: {counts.iloc[0]} clarification requests in 4 weeks"
         if len(counts) else "no clarification requests in 4 weeks"),
        playbook.lanes[catalog()[str(counts.index[0])].lane if len(counts)
                       and str(counts.index[0]) in catalog() else "C"].owner)


def _missing_artifacts(ctx: Context, playbook: Playbook, start: pd.Timestamp,
                       end: pd.Timestamp) -> Answer:
    f, lanes = ctx.frames, playbook.lanes
    month = start - pd.Timedelta(days=21)
    missing = missing_at_handoff_qa(f.onboardings, f.artifacts, f.qa_reviews, ctx.items,
                                    month, end)
    missed = missing[missing["missing"]]["key"].value_counts()
    if len(missed):
        _stage, item = playbook.item(str(missed.index[0]))
        answer = f"{item.label}: missing at {missed.iloc[0]} handoff QA checks in 4 weeks"
        owner = lanes[item.lane].owner
    else:
        answer, owner = "none missing at handoff QA in 4 weeks", lanes["D"].owner
    return _answer("Which handoff artifacts were most frequently missing?", answer, owner)


def _escalations(ctx: Context, playbook: Playbook, start: pd.Timestamp,
                 end: pd.Timestamp) -> Answer:
    f = ctx.frames
    founder = str(playbook.business.founder.email)
    comms = f.communications
    escalated = comms[(comms["recipients"] == founder) & (comms["audience"] == "team")
                      & comms["sent_at"].between(start, end, inclusive="left")]
    by_template = escalated["template"].value_counts()
    if len(by_template):
        template = str(by_template.index[0])
        kind_key = template.removeprefix("blocker_")
        label = playbook.blockers[kind_key].label if kind_key in playbook.blockers else template
        lane = playbook.blockers[kind_key].lane if kind_key in playbook.blockers else "C"
        answer = f"{label}: {by_template.iloc[0]} escalations reached the founder"
    else:
        escalations = f.interruptions[(f.interruptions["category"] == "client_escalation")
                                      & f.interruptions["at"].between(start, end,
                                                                      inclusive="left")]
        answer = (f"client escalations: {len(escalations)} founder interruptions"
                  if len(escalations) else "no escalation reached the founder")
        lane = "C"
    return _answer("Which escalation consumed the most leadership time?", answer,
                   playbook.lanes[lane].owner)


def _interrupting_lane(ctx: Context, playbook: Playbook, start: pd.Timestamp,
                       end: pd.Timestamp) -> Answer:
    interruptions, lanes = ctx.frames.interruptions, playbook.lanes
    week = interruptions[interruptions["at"].between(start, end, inclusive="left")]
    by_lane = week["lane"].dropna().value_counts()
    if len(by_lane):
        lane = str(by_lane.index[0])
        avoidable = int(week[week["lane"] == lane]["avoidable"].astype(bool).sum())
        answer = (f"lane {lane} ({lanes[lane].name}): {by_lane.iloc[0]} interruptions, "
                  f"{avoidable} avoidable")
    else:
        lane, answer = "C", "no founder interruptions this week"
    return _answer("Which onboarding lane created the most founder interruptions?", answer,
                   lanes[lane].owner)
