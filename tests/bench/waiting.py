"""Waiting clients cost nothing: N onboardings suspended on a real Prefect server and runner,
against the naive design (one live polling process per client); then resumes through
`handoff artifact add` with three VAs at once."""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Any

from prefect import flow

from deployments.serve import RUNNER_ENV
from tests.bench import stagemove
from tests.bench.common import OUT, PY, ROOT, Part, log, median, p95
from tests.bench.stack import count_runs, new_clients, prefect_stack, tree, wait_for

NAIVE_POLL_SECONDS = 5.0
VAS = 3  # VAs recording at once while the 50 clients are resumed
SINGLE = 5  # stage moves timed one client at a time, before the VAs start


@flow(name="naive-onboarding")
def naive_onboarding(onboarding_id: int) -> str:
    """The design a user might write: one live process per client, polling the database."""
    from db.playbook import get_playbook
    from db.session import session_factory
    from tasks.onboarding import records

    playbook = get_playbook()
    while True:
        with session_factory()() as session, session.begin():
            ob = records.get_onboarding(session, onboarding_id)
            if ob.status != "active":
                return ob.status
            if not records.exit_problems(session, playbook, ob):
                records.advance(session, playbook, onboarding_id, actor="naive")
                continue
        time.sleep(NAIVE_POLL_SECONDS)


def bench_waiting(clients: int, naive: int, resumes: int, single: int) -> dict[str, Any]:

    from db.session import dispose_all
    from deployments.server import stop
    from tasks.prefect.pacing import start_run

    home = OUT / "waiting"
    result: dict[str, Any] = {"clients": clients, "naive_clients": naive, "resumed": resumes}
    with prefect_stack(home) as (api, env, runner):
        time.sleep(3)  # let the runner settle before its idle reading
        result["runner_idle"] = dict(zip(("processes", "rss_mib"), tree(runner.pid),
                                         strict=True))
        log(f"waiting: starting {clients} onboardings")
        ids = new_clients(clients, "Waiting")
        started = time.monotonic()
        for ob_id in ids:
            start_run(ob_id)
        peak = [0, 0.0]

        def all_suspended() -> bool:
            procs, rss = tree(runner.pid)
            peak[0], peak[1] = max(peak[0], procs), max(peak[1], rss)
            return count_runs(api, "Suspended") >= clients

        result["seconds_to_all_suspended"] = round(
            wait_for("every run suspended", all_suspended, timeout=60 + clients * 6), 1)
        log(f"waiting: {clients} suspended after {time.monotonic() - started:.0f}s")
        wait_for("runner children to exit", lambda: tree(runner.pid)[0] == 0, timeout=60)
        time.sleep(3)
        held = tree(runner.pid)
        result["runner_while_waiting"] = {"processes": held[0], "rss_mib": held[1]}
        result["runner_peak_while_starting"] = {"processes": peak[0], "rss_mib": peak[1]}

        # Resume through the CLI: one client at a time, then VAS at once; the stage move is
        # timed from the command returning to the transition row, and broken down.
        log(f"waiting: {single} stage moves one at a time, then {resumes} with {VAS} VAs")
        one = stagemove.moves_by(env, ids[:single], 1)
        many = stagemove.moves_by(env, ids[single:single + resumes], VAS)
        latencies = [(m["moved"] - m["called"]).total_seconds() for m in many]
        result["stage_move"] = {"one": stagemove.summary(one),
                                "vas": stagemove.summary(many)}
        dispose_all()
        result["resume_latency_s"] = {"median": median(latencies), "p95": p95(latencies),
                                      "max": max(latencies), "n": len(latencies)}
        result["resume_latencies"] = [round(x, 2) for x in latencies]
        # The naive design at a size this machine holds.
        log(f"waiting: naive design, {naive} polling flows")
        naive_log = (home / "naive-runner.log").open("ab")
        naive_proc = subprocess.Popen([PY, "-m", "tests.bench.floor_runner"], cwd=ROOT,
                                      env={**env, "PREFECT_RUNNER_POLL_FREQUENCY":
                                           RUNNER_ENV["PREFECT_RUNNER_POLL_FREQUENCY"]},
                                      stdout=naive_log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            from tests.flow.conftest import wait_for_deployment

            wait_for_deployment(api, "naive-onboarding/naive", timeout=120)
            wait_for_deployment(api, stagemove.EMPTY, timeout=120)
            result["stage_move"]["empty"] = stagemove.empty_runs(2 if single < 5 else 5)
            result["stage_move"]["imports"] = stagemove.import_floors()
            time.sleep(3)
            result["naive_runner_idle"] = dict(zip(("processes", "rss_mib"),
                                                   tree(naive_proc.pid), strict=True))
            from prefect.deployments import run_deployment

            naive_ids = new_clients(naive, "Naive")
            for ob_id in naive_ids:
                run_deployment("naive-onboarding/naive", parameters={"onboarding_id": ob_id},
                               timeout=0, as_subflow=False)
            wait_for("every naive run polling",
                  lambda: count_runs(api, "Running") >= naive, timeout=60 + naive * 8)
            time.sleep(2 * NAIVE_POLL_SECONDS)  # every naive run has polled
            procs, rss = tree(naive_proc.pid)
            result["naive_while_waiting"] = {"processes": procs, "rss_mib": rss}
        finally:
            stop(naive_proc)
    idle = result["runner_idle"]["rss_mib"]
    waiting = result["runner_while_waiting"]
    naive_idle = result["naive_runner_idle"]["rss_mib"]
    naive_wait = result["naive_while_waiting"]
    result["per_waiting_client"] = {
        "handoff_processes": waiting["processes"] / clients,
        "handoff_mib": (waiting["rss_mib"] - idle) / clients,
        "naive_processes": naive_wait["processes"] / naive,
        "naive_mib": (naive_wait["rss_mib"] - naive_idle) / naive,
    }
    return result


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=SINGLE + 50,
                        help="onboardings started and left suspended (each run start costs "
                             "~3 s of CPU here, so 50 keeps `make bench` under 15 minutes)")
    parser.add_argument("--naive", type=int, default=10,
                        help="clients for the naive one-process-per-client design")
    parser.add_argument("--resume", type=int, default=50)


def run(args: argparse.Namespace) -> dict[str, Any]:
    clients = min(args.clients, 20) if args.quick else args.clients
    naive = min(args.naive, 5) if args.quick else args.naive
    single = 2 if args.quick else SINGLE
    resumes = min(args.resume, clients - single, 10 if args.quick else args.resume)
    return bench_waiting(clients, naive, resumes, single)


def table(w: dict[str, Any]) -> list[str]:
    per = w["per_waiting_client"]
    lat = w["resume_latency_s"]
    return [f"**Waiting clients** ({w['clients']} suspended runs; naive design at "
            f"{w['naive_clients']})", "",
            "| design | processes held | runner RSS MiB (idle → waiting) | per waiting "
            "client |", "|---|---|---|---|",
            f"| handoff (suspended runs) | {w['runner_while_waiting']['processes']} | "
            f"{w['runner_idle']['rss_mib']:.0f} → {w['runner_while_waiting']['rss_mib']:.0f}"
            f" | {per['handoff_processes']:.2f} processes, {per['handoff_mib']:.2f} MiB |",
            f"| naive (one polling flow per client) | "
            f"{w['naive_while_waiting']['processes']} | "
            f"{w['naive_runner_idle']['rss_mib']:.0f} → "
            f"{w['naive_while_waiting']['rss_mib']:.0f} | {per['naive_processes']:.2f} "
            f"processes, {per['naive_mib']:.0f} MiB |", "",
            f"All {w['clients']} runs suspended {w['seconds_to_all_suspended']:.0f} s "
            f"after the first start. Resume through `handoff artifact add` ({VAS} VAs at "
            f"once, {lat['n']} clients): latency to the stage transition row median "
            f"{lat['median']:.1f} s, p95 {lat['p95']:.1f} s.", *stagemove.table(w)]


PART = Part(name="waiting", run=run, table=table, order=40, arguments=arguments)
