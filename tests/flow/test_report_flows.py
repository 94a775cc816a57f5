"""The founder's scheduled reports, run from their deployments on the real Prefect server."""

from __future__ import annotations

import httpx
import pytest

from tests.flow.conftest import Stack
from tests.flow.test_onboarding_flow import wait_until


def _run(stack: Stack, deployment: str, parameters: dict[str, object]) -> str:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        run = run_deployment(deployment, parameters=parameters, timeout=0)
    return str(run.id)  # type: ignore[union-attr]


def _state(stack: Stack, run_id: str) -> str:
    return str(httpx.get(f"{stack.api_url}/flow_runs/{run_id}", timeout=10)
               .json()["state"]["type"])


@pytest.mark.flow
def test_weekly_review_and_memo_publish_artifacts_and_mail_the_founder(stack: Stack) -> None:
    stack.cli("demo", "--force")  # a realistic history in the runner's database
    weekly = _run(stack, "weekly-review/weekly-review", {"as_of": "2026-11-23T08:00"})
    memo = _run(stack, "monthly-memo/monthly-memo", {"month": "2026-10"})
    for run_id in (weekly, memo):
        wait_until(f"run {run_id} completed",
                   lambda r=run_id: _state(stack, r) in ("COMPLETED", "FAILED", "CRASHED"),
                   timeout=180)
        assert _state(stack, run_id) == "COMPLETED"
    for key in ("weekly-review", "weekly-review-stage-aging", "weekly-review-corrective-actions"):
        artifact = httpx.get(f"{stack.api_url}/artifacts/{key}/latest", timeout=10)
        assert artifact.status_code == 200, key
    table = httpx.get(f"{stack.api_url}/artifacts/weekly-review-stage-aging/latest",
                      timeout=10).json()
    assert table["type"] == "table" and table["data"]
    founder = [m for m in stack.smtp.messages
               if list(m.rcpt_tos) == ["founder@northwind.example"]]
    subjects = [str(m.message["Subject"]) for m in founder]
    assert sum("review" in s.lower() for s in subjects) == 1, subjects
    memo_mail = [m for m in founder if "memo" in str(m.message["Subject"]).lower()]
    assert len(memo_mail) == 1, subjects
    parts = {p.get_content_type() for p in memo_mail[0].message.walk()}
    assert {"image/png", "text/csv", "text/plain", "text/html"} <= parts

    again = _run(stack, "monthly-memo/monthly-memo", {"month": "2026-10"})
    wait_until("second memo run", lambda: _state(stack, again) == "COMPLETED", timeout=180)
    assert len([m for m in stack.smtp.messages
                if "memo" in str(m.message["Subject"]).lower()]) == 1  # exactly once a month
