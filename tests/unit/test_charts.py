"""The memo's charts: drawn when there is something to draw, None (not a crash) when not."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tasks.reporting import charts

KPI_COLUMNS = ["median_close_to_kickoff_days", "median_kickoff_to_ready_days", "sla_adherence",
               "handoff_rework_rate", "founder_interruptions_per_week"]
MONTHS = ["2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10"]


def _monthly(values: dict[str, list[float]]) -> pd.DataFrame:
    frame = pd.DataFrame({"month": MONTHS})
    for column in KPI_COLUMNS:
        frame[column] = values.get(column, [math.nan] * len(MONTHS))
    return frame


def _blockers(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["type", "opened", "blocked_days"]).astype(
        {"type": object, "opened": "int64", "blocked_days": float})


def _is_png(image: bytes | None) -> bool:
    return image is not None and image.startswith(b"\x89PNG")


@pytest.mark.parametrize(("values", "drawn"), [
    ({}, False),  # a new install: no KPI has a value in any month
    ({"founder_interruptions_per_week": [math.nan] * 5 + [1.5]}, True),  # one point
    ({"sla_adherence": [math.nan] * 4 + [0.5, 1.0]}, True),  # other panels empty
    ({column: [1.0] * 6 for column in KPI_COLUMNS}, True),
])
def test_kpi_trends(values: dict[str, list[float]], drawn: bool) -> None:
    image = charts.kpi_trends(_monthly(values))
    assert _is_png(image) if drawn else image is None


@pytest.mark.parametrize(("this", "last", "drawn"), [
    ([math.nan, math.nan], [math.nan, math.nan], False),
    ([0.3, math.nan], [math.nan, math.nan], True),
    ([math.nan, math.nan], [2.0, math.nan], True),
])
def test_stage_aging(this: list[float], last: list[float], drawn: bool) -> None:
    stages = ["Close confirmation", "Intake completion"]
    image = charts.stage_aging(pd.Series(this, index=stages), pd.Series(last, index=stages),
                               pd.Series([1.0, 5.0], index=stages))
    assert _is_png(image) if drawn else image is None


@pytest.mark.parametrize(("rows", "drawn"), [
    ([], False),  # no blocker this month: the max of nothing is NaN, which crashed the memo
    ([("Approval delay", 0, 0.0)], False),
    ([("Approval delay", 1, 0.0)], True),  # opened on the last day: zero days blocked
    ([("Approval delay", 0, 2.5), ("Missing access", 2, 1.0)], True),
])
def test_blockers_by_type(rows: list[tuple[str, int, float]], drawn: bool) -> None:
    image = charts.blockers_by_type(_blockers(rows))
    assert _is_png(image) if drawn else image is None
