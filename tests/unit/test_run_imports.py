"""A client's run starts with what it needs: every resumed `client-onboarding` run is a fresh
process that imports the runner's main module (deployments/serve.py, as `__mp_main__`), Prefect's
engine and flows/onboarding.py before its body runs, and each stage move waits for those imports.
Packages that only reports, the CLI, the portal, the inbox or PostgreSQL use stay out of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Imported by a module the flow imports, each would add to every stage move; where they belong.
NOT_AT_START = {
    "pandas": "KPIs and reports (tasks/reporting, tasks/calendar/vectorised.py)",
    "numpy": "KPIs and reports",
    "matplotlib": "report charts",
    "typer": "the CLI",
    "holidays": "computing a year's public holidays (kept on disk once computed)",
    "imap_tools": "the inbox sweep",
    "premailer": "mail rendering of HTML with CSS",
    "lxml": "mail rendering of HTML with CSS",
    "uvicorn": "the portal",
    "alembic": "handoff db upgrade",
    "psycopg": "a PostgreSQL database (loaded by SQLAlchemy when one is configured)",
}


def test_a_client_run_imports_nothing_its_body_does_not_need() -> None:
    code = ("import json, sys; import deployments.serve, prefect.flow_engine, flows.onboarding; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                                           capture_output=True, text=True,
                                           check=True).stdout))
    assert "flows.onboarding" in loaded and "tasks.onboarding.steps" in loaded
    assert {name: why for name, why in NOT_AT_START.items() if name in loaded} == {}
