"""The runner polls as deployments/serve.py's RUNNER_ENV says, although Prefect read its settings
before serve set it: it once polled every 10 s (Prefect's default) while RUNNER_ENV said 2, and a
resumed client waited ~5 s for the runner to pick its run up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_runner_polls_as_runner_env_says_whenever_prefect_was_imported(tmp_path: Path) -> None:
    code = ("import prefect; "  # first, as in the serving process: its settings are read now
            "from deployments.serve import RUNNER_ENV, configure_runner_env, new_runner; "
            "configure_runner_env(); "
            "print(new_runner(2).query_seconds, RUNNER_ENV['PREFECT_RUNNER_POLL_FREQUENCY'])")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_RUNNER_POLL_FREQUENCY"}
    env["HANDOFF_HOME"] = str(tmp_path)
    polled, said = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                  text=True, check=True, env=env).stdout.split()
    assert float(polled) == float(said) == 1.0
