"""Each KPI against values computed by hand on a small inline frame (dagster style)."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from db.playbook import Playbook, get_playbook
from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.vectorised import business_days
from tasks.reporting.kpis.communication import repeat_followup_requests, sla_adherence
from tasks.reporting.kpis.completeness import (
    checklist_completion_rate,
    item_frame,
    missing_artifact_rate,
    missing_at_handoff_qa,
)
from tasks.reporting.kpis.founder import (
    avoidable_share,
    interruptions_by_category,
    interruptions_per_week,
)
from tasks.reporting.kpis.frames import Frames, _concat, _shared_strings
from tasks.reporting.kpis.metrics import METRICS
from tasks.reporting.kpis.periods import week_start
from tasks.reporting.kpis.quality import first_30_day_incidents, handoff_rework_rate, red_flags
from tasks.reporting.kpis.speed import (
    median_close_to_kickoff,
    median_kickoff_to_ready,
    stage_aging,
    stage_stays,
    with_durations,
)
from tasks.reporting.kpis.triggers import evaluate_thresholds

CAL = BusinessCalendar(timezone="UTC")  # Mon-Fri 09:00-17:00 UTC, no holidays
MON = pd.Timestamp("2026-11-02 09:00", tz="UTC")  # a Monday
WEEK = (MON - pd.Timedelta(hours=9), MON + pd.Timedelta(days=7) - pd.Timedelta(hours=9))


def at(days: float = 0, hours: float = 0) -> pd.Timestamp:
    return MON + pd.Timedelta(days=days, hours=hours)


def onboardings(*rows: dict[str, object]) -> pd.DataFrame:
    base = {"client_name": "C", "segment": "smb", "offer": "Growth", "owner_email": "va@x.example",
            "stage": "intake_completion", "status": "active", "closed_at": at(-7),
            "stage_entered_at": at(-7), "kickoff_at": pd.NaT, "ready_at": pd.NaT,
            "kickoff_by": None, "first_milestone": None, "next_action_due": pd.NaT}
    frame = pd.DataFrame([{**base, **r} for r in rows])
    for c in ("closed_at", "stage_entered_at", "kickoff_at", "ready_at", "next_action_due"):
        frame[c] = pd.to_datetime(frame[c], utc=True)
    return frame


@pytest.fixture(scope="module")
def playbook() -> Playbook:
    return get_playbook()


@pytest.mark.parametrize(("start", "end", "expected"), [
    (at(0), at(2), 2.0),                        # Mon 09:00 -> Wed 09:00
    (at(4, 4), at(7, 4), 1.0),                  # Fri 13:00 -> Mon 13:00 over the weekend
    (at(0), at(0, 4), 0.5),                     # half a day
    (at(-2), at(0), 0.0),                       # Sat 09:00 -> Mon 09:00: no business time
])
def test_business_days(start: pd.Timestamp, end: pd.Timestamp, expected: float) -> None:
    got = business_days(CAL, pd.Series([start]), pd.Series([end]))
    assert got.iloc[0] == pytest.approx(expected)


def test_median_speed_counts_only_events_in_the_period() -> None:
    frame = onboardings(
        {"id": 1, "closed_at": at(0), "kickoff_at": at(1), "ready_at": at(3)},      # 1 d, 2 d
        {"id": 2, "closed_at": at(0), "kickoff_at": at(2), "ready_at": at(4)},      # 2 d, 2 d
        {"id": 3, "closed_at": at(-7), "kickoff_at": at(3), "ready_at": pd.NaT},    # 8 d
        {"id": 4, "closed_at": at(-14), "kickoff_at": at(-7), "ready_at": at(-3)},  # outside
    )
    frame = with_durations(frame, CAL)
    assert median_close_to_kickoff(frame, *WEEK) == pytest.approx(2.0)
    assert median_kickoff_to_ready(frame, *WEEK) == pytest.approx(2.0)


@pytest.mark.parametrize(("late", "expected"), [
    ([0, 0, 0, 0], 1.0),
    ([0, 0, 30, 0], 0.75),
    ([5, 10], 0.0),
    ([], math.nan),
])
def test_sla_adherence(late: list[int], expected: float) -> None:
    rows = [{"sla_key": "welcome", "status": "sent", "sent_at": at(1), "late_business_minutes": m}
            for m in late]
    rows += [{"sla_key": None, "status": "sent", "sent_at": at(1), "late_business_minutes": 99},
             {"sla_key": "welcome", "status": "queued", "sent_at": pd.NaT,
              "late_business_minutes": None},
             {"sla_key": "welcome", "status": "sent", "sent_at": at(9),
              "late_business_minutes": 50}]
    frame = pd.DataFrame(rows)
    frame["sent_at"] = pd.to_datetime(frame["sent_at"], utc=True)
    got = sla_adherence(frame, *WEEK)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_repeat_followup_requests() -> None:
    asks = pd.DataFrame([
        {"onboarding_id": 1, "kind": "followup_request", "at": at(0)},
        {"onboarding_id": 1, "kind": "followup_request", "at": at(2)},   # client 1: 2 asks
        {"onboarding_id": 2, "kind": "followup_request", "at": at(1)},   # client 2: 1 ask
        {"onboarding_id": 2, "kind": "followup_request", "at": at(-3)},  # last week
        {"onboarding_id": 3, "kind": "clarification", "at": at(1)},
        {"onboarding_id": 3, "kind": "clarification", "at": at(2)},      # not follow-ups
        {"onboarding_id": 4, "kind": "followup_request", "at": at(1)},
        {"onboarding_id": 4, "kind": "followup_request", "at": at(3)},
        {"onboarding_id": 4, "kind": "followup_request", "at": at(4)},   # client 4: 3 asks
    ])
    assert repeat_followup_requests(asks, *WEEK) == 2


def test_handoff_rework_rate_counts_failures_before_handoff() -> None:
    frame = onboardings(*[{"id": i, "ready_at": at(2)} for i in (1, 2, 3, 4)],
                        {"id": 5, "ready_at": at(-5)})
    qa = pd.DataFrame([
        {"onboarding_id": 1, "passed": False, "stage": "setup_execution", "at": at(1)},
        {"onboarding_id": 1, "passed": True, "stage": "setup_execution", "at": at(1, 3)},
        {"onboarding_id": 2, "passed": False, "stage": "ready_to_deliver", "at": at(3)},  # after
        {"onboarding_id": 3, "passed": True, "stage": "ready_to_deliver", "at": at(1)},
        {"onboarding_id": 5, "passed": False, "stage": "ready_to_deliver", "at": at(-6)},
    ])
    assert handoff_rework_rate(frame, qa, *WEEK) == pytest.approx(0.25)


def test_first_30_day_incidents() -> None:
    frame = onboardings({"id": 1, "ready_at": at(-10)}, {"id": 2, "ready_at": at(-40)})
    incidents = pd.DataFrame([
        {"onboarding_id": 1, "severity": "minor", "at": at(1)},   # day 11 after handoff
        {"onboarding_id": 1, "severity": "major", "at": at(2)},   # day 12
        {"onboarding_id": 2, "severity": "minor", "at": at(1)},   # day 41: not early
        {"onboarding_id": 1, "severity": "minor", "at": at(-12)},  # before handoff? not counted
    ])
    assert first_30_day_incidents(frame, incidents, *WEEK) == 2


def test_interruptions_by_category_and_per_week() -> None:
    rows = pd.DataFrame([
        {"category": "scope", "avoidable": True, "lane": "C", "at": at(0)},
        {"category": "scope", "avoidable": False, "lane": "C", "at": at(1)},
        {"category": "scope", "avoidable": True, "lane": "C", "at": at(2)},
        {"category": "access", "avoidable": True, "lane": "B", "at": at(3)},
        {"category": "access", "avoidable": True, "lane": "B", "at": at(-4)},  # last week
    ])
    table = interruptions_by_category(rows, *WEEK).set_index("category")
    assert table.loc["scope", ["avoidable", "required", "total"]].tolist() == [2, 1, 3]
    assert table.loc["access", ["avoidable", "required", "total"]].tolist() == [1, 0, 1]
    assert interruptions_per_week(rows, *WEEK) == pytest.approx(4.0)
    assert avoidable_share(rows, *WEEK) == pytest.approx(0.75)


def test_stage_stays_and_aging() -> None:
    frame = onboardings(
        {"id": 1, "closed_at": at(0), "stage": "kickoff_alignment", "stage_entered_at": at(3)},
        {"id": 2, "closed_at": at(0), "stage": "intake_completion", "stage_entered_at": at(1)},
    )
    moves = pd.DataFrame([
        {"onboarding_id": 1, "at": at(1), "from_stage": "close_confirmation",
         "to_stage": "intake_completion"},
        {"onboarding_id": 1, "at": at(3), "from_stage": "intake_completion",
         "to_stage": "kickoff_alignment"},
        {"onboarding_id": 2, "at": at(1, 4), "from_stage": "close_confirmation",
         "to_stage": "intake_completion"},
    ])
    stays = stage_stays(frame, moves, CAL)
    days = stays.set_index(["onboarding_id", "stage"])["days"]
    assert days[(1, "close_confirmation")] == pytest.approx(1.0)
    assert days[(1, "intake_completion")] == pytest.approx(2.0)
    assert days[(2, "close_confirmation")] == pytest.approx(1.5)
    aging = stage_aging(frame, stays, CAL, *WEEK).set_index("stage")
    assert aging.loc["close_confirmation", "median_days"] == pytest.approx(1.25)
    assert aging.loc["intake_completion", "in_stage_now"] == 1
    # client 2 entered intake Tue 09:00 (stage_entered_at); the week ends Mon 00:00 -> 4 days
    assert aging.loc["intake_completion", "median_age_now"] == pytest.approx(4.0)


def test_checklist_completion_counts_items_due_so_far(playbook: Playbook) -> None:
    items = item_frame(playbook)
    close_items = items[items["stage"] == "close_confirmation"]["key"].tolist()
    intake_items = items[items["stage"] == "intake_completion"]["key"].tolist()
    assert (len(close_items), len(intake_items)) == (3, 8)
    frame = onboardings({"id": 1, "closed_at": at(-10)}, {"id": 2, "closed_at": at(0)})
    moves = pd.DataFrame([
        {"onboarding_id": 1, "at": at(-9), "from_stage": "close_confirmation",
         "to_stage": "intake_completion"},   # intake since Tue last week: 5-day SLA ran out
        {"onboarding_id": 2, "at": at(0, 2), "from_stage": "close_confirmation",
         "to_stage": "intake_completion"},   # intake since Mon: SLA not out at week end
    ])
    recorded = [(1, k) for k in close_items + intake_items[:6]] + [(2, k) for k in close_items]
    artifacts = pd.DataFrame([{"onboarding_id": i, "key": k, "recorded_at": at(-1)}
                              for i, k in recorded])
    slas = {i: (s.sla.within, s.sla.unit, s.sla.from_) for i, s in enumerate(playbook.stages)}
    rate = checklist_completion_rate(frame, artifacts, moves, items, slas, CAL, *WEEK)
    # due: client 1 -> 3 close + 8 intake = 11, done 9; client 2 -> 3 close, done 3
    assert rate == pytest.approx(12 / 14)


def test_missing_artifacts_at_first_handoff_qa(playbook: Playbook) -> None:
    items = item_frame(playbook)
    handoff = items[items["stage"] == "ready_to_deliver"]["key"].tolist()
    frame = onboardings({"id": 1, "ready_at": at(3)}, {"id": 2, "ready_at": at(3)})
    qa = pd.DataFrame([{"onboarding_id": 1, "passed": False, "stage": "ready_to_deliver",
                        "at": at(1)},
                       {"onboarding_id": 1, "passed": True, "stage": "ready_to_deliver",
                        "at": at(2)}])
    rows = [{"onboarding_id": 1, "key": k, "recorded_at": at(0) if n >= 2 else at(1, 2)}
            for n, k in enumerate(handoff)]
    rows += [{"onboarding_id": 2, "key": k, "recorded_at": at(2)} for k in handoff]
    missing = missing_at_handoff_qa(frame, pd.DataFrame(rows), qa, items, *WEEK)
    assert missing.groupby("onboarding_id")["missing"].sum().tolist() == [2, 0]
    assert missing_artifact_rate(missing) == pytest.approx(2 / (2 * len(handoff)))


def _series(**columns: list[float]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {k: [math.nan] * n for k in METRICS}
    base.update(columns)
    return pd.DataFrame(base)


@pytest.mark.parametrize(("series", "expected"), [
    (_series(handoff_rework_rate=[0.05, 0.14]),
     {"handoff_rework_high": "handoff rework 14% > 10%: tighten packet quality gate"}),
    (_series(handoff_rework_rate=[0.30, 0.10]), {}),
    (_series(repeat_followup_requests=[1, 3, 5]),
     {"repeat_followups_rising": "repeat follow-up requests rising 2 weeks (1 → 3 → 5): "
                                 "improve template clarity and cadence"}),
    (_series(repeat_followup_requests=[1, 5, 5]), {}),
    (_series(first_30_day_incidents=[1, 2, 4], checklist_completion_rate=[1, 1, 0.95]),
     {"checklist_high_incidents_rising": "first-30-day incidents rising 2 weeks (1 → 2 → 4) "
      "while checklist completion is 95%: audit checklist quality, not just completion"}),
    (_series(first_30_day_incidents=[1, 2, 4], checklist_completion_rate=[1, 1, 0.80]), {}),
    (_series(median_close_to_kickoff_days=[5, 5, 5, 5, 6.5, 7]),
     {"close_to_kickoff_rising": "close → kickoff (median) 7.0 d, up 40% on the 5.0 d baseline "
                                 "(over +20% for 2 weeks): review scheduling and intake workflow"}),
    (_series(median_close_to_kickoff_days=[5, 5, 5, 5, 5.5, 7]), {}),  # only one week > 6.0
])
def test_threshold_rules(playbook: Playbook, series: pd.DataFrame,
                         expected: dict[str, str]) -> None:
    got = {b.key: b.title for b in evaluate_thresholds(playbook, series)}
    assert got == expected


def test_red_flags() -> None:
    frame = onboardings({"id": 1, "closed_at": at(-3)}, {"id": 2, "closed_at": at(-30)})
    empty = pd.DataFrame(columns=["onboarding_id", "at"])
    frames = Frames(
        onboardings=frame, artifacts=empty, transitions=empty,
        reschedules=pd.DataFrame([{"onboarding_id": 1, "at": at(0)},
                                  {"onboarding_id": 1, "at": at(1)}]),
        blockers=pd.DataFrame([
            {"onboarding_id": 1, "type": "scope_ambiguity", "opened_at": at(1),
             "resolved_at": pd.NaT},
            {"onboarding_id": 2, "type": "scope_ambiguity", "opened_at": at(1),
             "resolved_at": pd.NaT},  # day 31: not early
            {"onboarding_id": 2, "type": "missing_access", "opened_at": at(0),
             "resolved_at": pd.NaT},
            {"onboarding_id": 2, "type": "missing_access", "opened_at": at(2),
             "resolved_at": pd.NaT}]),
        communications=empty,
        responses=pd.DataFrame([
            {"onboarding_id": 2, "kind": "followup_request", "at": at(0)},
            {"onboarding_id": 2, "kind": "followup_request", "at": at(1)}]),  # 1 d < 3 d cadence
        qa_reviews=empty, incidents=empty, interruptions=empty,
        packets=pd.DataFrame([{"onboarding_id": 2, "revision": 1, "created_at": at(0)},
                              {"onboarding_id": 2, "revision": 2, "created_at": at(1)}]),
        actions=empty, audits=empty)
    flags = red_flags(frames, CAL, 3.0, *WEEK).set_index("onboarding_id")
    assert flags.loc[1, "frequent_kickoff_reschedules"]
    assert flags.loc[1, "early_scope_misunderstanding"]
    assert not flags.loc[2, "early_scope_misunderstanding"]
    assert flags.loc[2, ["recurring_missing_access", "packet_multiple_revisions",
                         "status_asks_above_cadence"]].all()
    assert flags["flags"].to_dict() == {1: 2, 2: 3}


def test_metric_formatting() -> None:
    assert METRICS["handoff_rework_rate"].format(0.14) == "14%"
    assert METRICS["median_close_to_kickoff_days"].format(3.24) == "3.2 d"
    assert METRICS["first_30_day_incidents"].format(math.nan) == "n/a"


def test_week_start_is_monday_in_business_time() -> None:
    sunday_night_ny = dt.datetime(2026, 11, 9, 3, 30, tzinfo=dt.UTC)  # Sun 22:30 New York
    assert week_start(sunday_night_ny, "America/New_York") == pd.Timestamp(
        "2026-11-02 05:00", tz="UTC")


def test_loaded_strings_are_shared_and_missing_values_kept() -> None:
    values = pd.Series(["sent", None, "queued", "sent", "sent", "queued"], dtype=object)
    shared = _shared_strings(values)
    assert shared.tolist() == values.tolist()
    assert shared.iloc[0] is shared.iloc[3]
    nothing = pd.Series([None, None], dtype=object)
    assert _shared_strings(nothing).tolist() == [None, None]


def test_chunks_concatenate_to_the_dtypes_of_one_read() -> None:
    """A nullable number column stays float when one chunk happened to be all NULL."""
    chunks = [pd.DataFrame({"late": [3.0, math.nan], "note": ["a", None]}),
              pd.DataFrame({"late": pd.Series([None, None], dtype=object),
                            "note": pd.Series([None, None], dtype=object)})]
    whole = _concat(chunks, {"late"})
    assert whole["late"].dtype == "float64"
    assert whole["note"].tolist() == ["a", None, None, None]
