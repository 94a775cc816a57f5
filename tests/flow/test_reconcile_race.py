"""Three `handoff reconcile` at once, as three VAs catching up after missed wake-ups, against
one SQLite database and the session's Prefect server (embedded SQLite): each exits 0 without a
word on stderr, and each thing is done once — every waiting run resumed by one of them, every
missing run started once, every dead run restarted once, with one event each."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import httpx
import pytest

from tests.flow.conftest import HANDOFF, ROOT, Stack, free_port
from tests.flow.test_onboarding_flow import (
    db_value,
    mail_to,
    stage_of,
    suspended,
    wait_until,
)

RECONCILES = 3
WAKING = 5  # runs to resume: the longer each pass's work, the more the passes overlap
CLOSE_KEYS = ["deal_terms_confirmed", "scope_and_timeline_captured", "onboarding_owner_assigned"]


def _events(stack: Stack, kind: str, ob_id: int) -> int:
    return int(db_value(stack, "SELECT count(*) FROM events WHERE kind = :k AND onboarding_id = :i",
                        k=kind, i=ob_id))


def _runs_of(stack: Stack, ob_id: int) -> list[dict[str, object]]:
    response = httpx.post(f"{stack.api_url}/flow_runs/filter", timeout=30, json={
        "flows": {"name": {"any_": ["client-onboarding"]}},
        "flow_runs": {"tags": {"all_": [f"onboarding:{ob_id}"]}}, "limit": 50})
    response.raise_for_status()
    return list(response.json())


def _unpaced(stack: Stack) -> dict[str, str]:
    """The CLI's environment with room for every run this test starts (the runner's --limit):
    the setup's runs start in one wave, and the passes start runs themselves, at once."""
    return {**stack.env, "HANDOFF_RUN_STARTS_IN_FLIGHT": "10"}


def _new_client(stack: Stack, client: str) -> int:
    """A client recorded without its run (the test decides when runs start)."""
    return int(json.loads(stack.cli(
        "onboard", "--client", client, "--segment", "smb", "--offer", "Growth",
        "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
        "--contact", f"pat@{client.lower().replace(' ', '')}.example",
        "--kickoff-by", "2099-01-01", "--first-milestone", "2099-02-01", "--no-flow",
        "--json").stdout)["id"])


def _run_id(stack: Stack, ob_id: int) -> str | None:
    return db_value(stack, "SELECT flow_run_id FROM onboardings WHERE id = :i",  # type: ignore[no-any-return]
                    i=ob_id)


# `handoff reconcile` in a process that first imports what the command imports, says so, and
# waits for the word: the three passes then read and act at the same moment, as VAs' commands
# overlap on a busy machine (there, imports take longer than the pass itself).
AT_ONCE = """
import sys
import deployments.cli.runs, prefect.client.orchestration, tasks.prefect.reconcile
from deployments.door import main
print("ready", flush=True)
sys.stdin.readline()
sys.argv = ["handoff", "reconcile", "--json"]
main()
"""


def _reconciles_at_once(stack: Stack) -> list[subprocess.CompletedProcess[str]]:
    procs = [subprocess.Popen([sys.executable, "-c", AT_ONCE], env=_unpaced(stack), cwd=ROOT,
                              text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(RECONCILES)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.flow
@pytest.mark.timeout(600)
def test_concurrent_reconciles_each_do_each_thing_once(stack: Stack) -> None:
    # Clients waiting at close confirmation.
    waiting = [_new_client(stack, f"Race Wake {n}") for n in range(WAKING)]
    dead_id = _new_client(stack, "Race Dead")
    started = subprocess.run([str(HANDOFF), "reconcile"], env=_unpaced(stack), text=True,
                             capture_output=True, timeout=180)
    assert started.returncode == 0, started.stderr
    runs = {ob_id: wait_until(f"{ob_id}'s run", lambda i=ob_id: _run_id(stack, i))  # type: ignore[misc]
            for ob_id in [*waiting, dead_id]}
    for ob_id, run_id in runs.items():
        wait_until(f"{ob_id} suspended", lambda r=run_id: suspended(stack, r),  # type: ignore[misc]
                   timeout=180)
    waking, dead = [(i, runs[i]) for i in waiting], (dead_id, runs[dead_id])
    # Their wake-ups were missed: the facts were recorded while Prefect was away.
    offline = {**stack.env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    for ob_id, _ in waking:
        said = subprocess.run([str(HANDOFF), "artifact", "add", str(ob_id), *CLOSE_KEYS],
                              env=offline, capture_output=True, text=True, timeout=120)
        assert said.returncode == 0 and "reconcile flow will" in said.stdout, said
    # A run cancelled in the UI: reconcile restarts it from the record.
    httpx.post(f"{stack.api_url}/flow_runs/{dead[1]}/set_state", timeout=30, json={
        "state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True}).raise_for_status()
    # Clients with no run at all.
    missing = [_new_client(stack, f"Race Missing {n}") for n in range(2)]

    moves = {ob_id: _events(stack, "stage_transition", ob_id) for ob_id, _ in waking}

    results = _reconciles_at_once(stack)

    for result in results:
        assert result.returncode == 0 and not result.stderr.strip(), (
            f"exit {result.returncode}: {result.stderr.strip()[-2000:]}")
    reports = [json.loads(result.stdout) for result in results]
    resumed = Counter(i for report in reports for i in report["resumed"])
    restarted = Counter(i for report in reports for i in report["restarted"])
    started = Counter(i for report in reports for i in report["started"])
    assert all(resumed[ob_id] == 1 for ob_id, _ in waking), resumed  # one of them woke each
    assert restarted[dead[0]] == 1, restarted
    # A start queued by one pass may be made by another's paced start: both say "started";
    # the client still gets one run and one link (below).
    assert all(started[ob_id] >= 1 for ob_id in missing), started

    for ob_id, _ in waking:
        wait_until(f"{ob_id} in intake", lambda i=ob_id: stage_of(stack, i)  # type: ignore[misc]
                   == "intake_completion:active")
    assert _events(stack, "flow_run_restarted", dead[0]) == 1
    for ob_id in [dead[0], *missing]:
        wait_until(f"{ob_id}'s run linked", lambda i=ob_id: _run_id(stack, i)  # type: ignore[misc]
                   not in (None, runs.get(i)), timeout=180)
        assert len(_runs_of(stack, ob_id)) == (2 if ob_id == dead[0] else 1)
        assert _events(stack, "flow_run_linked", ob_id) == (2 if ob_id == dead[0] else 1)
    for n, (ob_id, _) in enumerate(waking):
        assert _events(stack, "stage_transition", ob_id) == moves[ob_id] + 1
        subjects = mail_to(stack, f"Race Wake {n}")
        assert len(subjects) == len(set(subjects)), subjects
