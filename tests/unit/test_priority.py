"""Runs yield the CPU: lowering the runner thread's priority reaches the processes it starts
and nothing else (Linux keeps a nice value per thread; a child inherits its parent thread's)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from deployments.priority import lower_run_priority

PRINT_NICE = [sys.executable, "-c", "import os; print(os.nice(0))"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux nice values")


def test_a_lowered_thread_starts_lowered_processes_and_leaves_the_rest_alone() -> None:
    before = os.nice(0)
    seen: dict[str, object] = {}

    def runner() -> None:
        seen["returned"] = lower_run_priority(before + 7)
        seen["child"] = int(subprocess.run(PRINT_NICE, capture_output=True, text=True,
                                           check=True).stdout)

    thread = threading.Thread(target=runner)
    thread.start()
    thread.join()
    assert seen == {"returned": before + 7, "child": before + 7}
    # This thread (the server's and the portal's side in serve) keeps its priority.
    assert os.nice(0) == before
    assert int(subprocess.run(PRINT_NICE, capture_output=True, text=True,
                              check=True).stdout) == before


def test_it_never_raises_a_priority() -> None:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.extend(
        [lower_run_priority(os.nice(0) + 5), lower_run_priority(0)]))
    thread.start()
    thread.join()
    assert result[1] == result[0] == os.nice(0) + 5


def niceness_after_importing_serve_as(name: str, niceness: int) -> int:
    """Import deployments/serve.py in a fresh process under the module name `name`, as
    multiprocessing's spawn does in a flow run the runner starts (`__mp_main__`, through this
    very call); the process's nice value afterwards."""
    code = ("import os, runpy; "
            f"runpy.run_module('deployments.serve', run_name={name!r}, alter_sys=True); "
            "print(os.nice(0))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "HANDOFF_RUN_NICENESS":
                                               str(niceness)}).stdout)


def test_a_run_the_runner_spawned_yields_from_its_first_import_and_the_runner_does_not() -> None:
    before = os.nice(0)
    assert niceness_after_importing_serve_as("__mp_main__", before + 6) == before + 6
    assert niceness_after_importing_serve_as("deployments.serve", before + 6) == before
