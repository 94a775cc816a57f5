"""The main job: a local Prefect server (unless one is configured) serving every deployment.

    python -m deployments.serve [--no-server] [--limit N] [--port 4200]

Every deployment is declared here, once, with explicit timezones and an explicit process limit.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.settings import get_settings
from deployments.priority import lower_spawned_run_priority
from tasks.prefect.offline import stay_offline

# A flow run the runner spawned imports this module first (as `__mp_main__`): it yields the CPU
# from here on; the runner itself does not (deployments/priority.py).
lower_spawned_run_priority(__name__)

RUNNER_ENV = {
    # Resumed runs re-execute from the top; persisted results keep what earlier runs stored.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    # A resumed run is picked up within ~1 s rather than ~10 s: each poll costs the idle
    # server ~6 ms of CPU (1.6 % of a core polling every 2 s, 2.2 % every 1 s).
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    # Running flow runs report every 30 s; the zombie automation crashes silent ones.
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
}


def served_flows(limit_tags: list[str] | None = None) -> list[tuple[Any, dict[str, Any]]]:
    """Every handoff deployment, from one place: each flow and how it is deployed."""
    from prefect.schedules import Cron

    from db.playbook import get_playbook
    from flows.deals import crm_poll, new_client
    from flows.inbox import inbox_sweep
    from flows.onboarding import client_onboarding
    from flows.reports import monthly_memo, post_onboarding_audit, quarterly_reset, weekly_review
    from flows.sweeps import escalation_sweep, reconcile, reminder_sweep, start_queued_runs

    tz = get_playbook().calendar.timezone
    tags = ["handoff", *(limit_tags or [])]
    return [
        (client_onboarding, dict(
            name="client-onboarding", tags=tags,
            description="One client's onboarding; started by `handoff onboard`.")),
        (reminder_sweep, dict(
            # Every hour, every day: a client in another timezone is mailed in their own
            # working hours, which may be the business's night or weekend.
            name="reminder-sweep", tags=tags, schedule=Cron("0 * * * *", timezone=tz),
            concurrency_limit=1,
            description="Reminder cadences and client mail, hourly, day and night (clients "
                        "abroad are mailed in their own working hours).")),
        (escalation_sweep, dict(
            name="escalation-sweep", tags=tags, schedule=Cron("15 8-18 * * 1-5", timezone=tz),
            concurrency_limit=1,
            description="Escalation thresholds and blocker paths, hourly through the day.")),
        (reconcile, dict(
            name="reconcile", tags=tags, schedule=Cron("*/5 * * * *", timezone=tz),
            concurrency_limit=1,
            description="Start missing runs, resume waiting runs whose condition is met.")),
        (inbox_sweep, dict(
            name="inbox-sweep", tags=tags, schedule=Cron("*/5 * * * *", timezone=tz),
            concurrency_limit=1,
            description="Client replies, auto-replies and bounces from the onboarding mailbox, "
                        "every 5 minutes in business and off hours.")),
        (start_queued_runs, dict(
            name="start-queued-runs", tags=tags, concurrency_limit=1,
            description="Starts queued client runs as earlier ones reach Suspended; started "
                        "by whoever queues them (onboard, import, webhooks, reconcile).")),
        (weekly_review, dict(
            name="weekly-review", tags=tags, schedule=Cron("0 8 * * 1", timezone=tz),
            concurrency_limit=1,
            description="Monday 08:00: stage aging, blockers, threshold breaks to actions, "
                        "risks; e-mailed to the founder.")),
        (monthly_memo, dict(
            name="monthly-memo", tags=tags, schedule=Cron("0 7 1 * *", timezone=tz),
            concurrency_limit=1,
            description="1st of the month: the founder's one-page memo with charts and CSV.")),
        (quarterly_reset, dict(
            name="quarterly-reset", tags=tags,
            schedule=Cron("0 9 1-3 1,4,7,10 1-5", timezone=tz, day_or=False),
            concurrency_limit=1,
            description="First business day of each quarter (once per quarter by its key): "
                        "the reset checklist with data.")),
        (post_onboarding_audit, dict(
            name="post-onboarding-audit", tags=tags, schedule=Cron("30 6 * * *", timezone=tz),
            concurrency_limit=1,
            description="Daily: the 30-day audit of clients handed off 30 days ago.")),
        (new_client, dict(
            name="new-client", tags=tags,
            description="Start a client from the Prefect UI: Run → Custom run, fill in the "
                        "deal, Submit. Checked like `handoff onboard`; bad input fails this run "
                        "with one line and records nothing.")),
        (crm_poll, dict(
            name="crm-poll", tags=tags, schedule=Cron("*/10 * * * *", timezone=tz),
            concurrency_limit=1,
            description="Every 10 minutes: won deals from HubSpot / Pipedrive since the stored "
                        "cursor (for installations without a public webhook URL).")),
    ]


def deployments(limit_tags: list[str] | None = None) -> list[object]:
    """Every handoff deployment as a Prefect deployment (what the workers' set-up deploys)."""
    return [flow.to_deployment(**how) for flow, how in served_flows(limit_tags)]


def configure_runner_env() -> None:
    """What every served run inherits: its environment, and the project's bytecode."""
    settings = get_settings()
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    for key, value in RUNNER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(settings.results_dir.resolve()))
    stay_offline()
    compile_sources()


def compile_sources() -> bool:
    """Write the project's bytecode now when this Python writes none as it imports
    (PYTHONDONTWRITEBYTECODE, common in containers); say whether it did.

    Every run is a fresh process importing the flow's modules, and without bytecode on disk each
    compiles them all from source again (~0.15 s of CPU a start, ~10 % of it). Only what changed
    since the last start is compiled; a read-only checkout is left as it is.
    """
    if not sys.dont_write_bytecode:
        return False
    import compileall

    root = Path(__file__).resolve().parent.parent
    return all([compileall.compile_dir(root / package, quiet=2)
                for package in ("db", "deployments", "flows", "tasks")])


def serve_all(limit: int) -> None:
    """Serve every deployment from this process; blocks until interrupted.

    Each flow is added to the runner as the flow itself (`add_flow`, as `flow.serve()` does),
    not as a deployment object (`prefect.serve`): the runner then starts a run by spawning a
    process (multiprocessing) that imports this module first and so yields the CPU from its
    first import on (above), rather than `python -m prefect.engine`, which would inherit the
    priority of the runner's thread. That thread, which polls for runs to start, keeps normal
    priority: niced, its poll would wait behind every busy process on a loaded machine.
    """
    import asyncio

    from prefect.exceptions import TerminationSignal

    from deployments.automations import ensure_zombie_automation

    configure_runner_env()
    ensure_zombie_automation(int(os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]))
    runner = new_runner(limit)
    for flow, how in served_flows():
        runner.add_flow(flow, **how)
    try:
        asyncio.run(runner.start())
    except TerminationSignal:  # SIGTERM while serving, as prefect.serve treats it
        pass


def new_runner(limit: int) -> Any:
    """The runner, polling as RUNNER_ENV says (call configure_runner_env first).

    Given explicitly: Prefect reads its settings once, when this process first imports it, and
    that is before configure_runner_env sets RUNNER_ENV here, so the runner read the setting's
    default (10 s) and picked a resumed run up ~5 s after it was told, not ~1 s.
    """
    from prefect.runner import Runner

    return Runner(limit=limit, query_seconds=float(os.environ["PREFECT_RUNNER_POLL_FREQUENCY"]))


def start_warm_cli() -> subprocess.Popen[bytes] | None:
    """The warm CLI process (deployments/warm.py), at normal priority, dying with this process;
    None when turned off (HANDOFF_WARM_CLI=false) or not on Linux."""
    if not get_settings().warm_cli or not sys.platform.startswith("linux"):
        return None
    from deployments.server import die_with_parent

    return subprocess.Popen([sys.executable, "-m", "deployments.warm"],
                            cwd=Path(__file__).resolve().parent.parent,
                            preexec_fn=die_with_parent)


def start_portal() -> PortalThread | None:
    """The client portal, served by uvicorn on a thread of this process; None when turned off
    or when it cannot bind (the runner serves on regardless). In this process so that `make
    run` stays one thing to start and waiting clients still cost no process; run
    `python -m deployments.web` on its own (HANDOFF_PORTAL_ENABLED=false here) to isolate it."""
    settings = get_settings()
    if not settings.portal_enabled:
        return None
    import uvicorn

    from deployments.web.__main__ import uvicorn_config
    from tasks.portal.links import master_key

    master_key(settings)  # create the key file now, not on the first request
    server = uvicorn.Server(uvicorn_config(settings))
    thread = threading.Thread(target=server.run, name="client-portal", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        print(f"warning: the client portal could not listen on {settings.portal_host}:"
              f"{settings.portal_port}; is something else using the port?", flush=True)
        server.should_exit = True
        return None
    return PortalThread(server=server, thread=thread)


@dataclass
class PortalThread:
    """The portal's uvicorn server and the thread serving it."""

    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Start (or join) the Prefect server, then serve; Ctrl-C stops everything."""
    parser = argparse.ArgumentParser(prog="python -m deployments.serve")
    parser.add_argument("--no-server", action="store_true",
                        help="use PREFECT_API_URL instead of starting a local server")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--limit", type=int, default=int(os.environ.get("HANDOFF_RUN_LIMIT", 8)),
                        help="most flow runs executing at once (suspended runs hold none)")
    args = parser.parse_args(argv)
    settings = get_settings()
    server = None
    if not args.no_server:
        from deployments.server import port_in_use, start_server, wait_healthy

        if port_in_use(args.port):
            print(f"port {args.port} on 127.0.0.1 is already in use by a process this command "
                  f"did not start (an old Prefect server?); stop it, or choose another port "
                  f"with --port", file=sys.stderr)
            return 2
        api = f"http://127.0.0.1:{args.port}/api"
        os.environ["PREFECT_API_URL"] = api
        os.environ.setdefault("PREFECT_UI_URL", f"http://127.0.0.1:{args.port}")
        home = settings.home / "prefect"
        server = start_server(home, port=args.port, log=Path(home / "server.log"), owned=True)
        print(f"starting Prefect server on 127.0.0.1:{args.port} (pid {server.pid}, log: "
              f"{home / 'server.log'})", flush=True)
        try:
            seconds = wait_healthy(api, timeout=300, process=server)
        except (RuntimeError, TimeoutError) as exc:
            print(f"the Prefect server did not start: {exc}; see {home / 'server.log'}",
                  file=sys.stderr, flush=True)
            _stop_server(server, args.port)
            return 1
        print(f"Prefect server ready in {seconds:.0f}s")
    ui = os.environ.get("PREFECT_UI_URL") or os.environ["PREFECT_API_URL"].removesuffix("/api")
    warm = start_warm_cli()
    try:
        portal = start_portal()
    except Exception as exc:  # the runner serves on without the portal, and says why
        print(f"warning: the client portal did not start: {exc}", file=sys.stderr, flush=True)
        portal = None
    portal_line = (f"  client portal: {settings.portal_base_url} (listening on "
                   f"{settings.portal_host}:{settings.portal_port})\n"
                   if portal else "  client portal: off (HANDOFF_PORTAL_ENABLED=false)\n")
    print(
        f"\nhandoff is running.\n"
        f"  Prefect UI:   {ui}\n"
        f"{portal_line}"
        f"  database:     {settings.database_url}\n"
        f"  mail:         {'SMTP ' + settings.smtp_host if settings.smtp_host else 'files in ' + str(settings.outbox_dir)}\n"  # noqa: E501
        f"  inbox:        {'IMAP ' + settings.imap_host + ' ' + settings.imap_folder if settings.imap_host else 'not read (HANDOFF_IMAP_HOST unset)'}\n"  # noqa: E501
        f"\nIn another terminal, start a first onboarding:\n"
        f"  .venv/bin/handoff onboard --client 'Acme Dental' --segment smb --offer 'Growth "
        f"retainer' --owner va@example.com --backup ops@example.com --contact pat@acme.example "
        f"--terms 'SOW v2 signed' --scope 'SEO + ads, 3 months'\n"
        f"\nCtrl-C stops everything.\n", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops cleanly, like Ctrl-C
    try:
        serve_all(args.limit)
    except KeyboardInterrupt:
        pass
    finally:
        if warm is not None:
            warm.terminate()
            warm.wait(10)
        if portal is not None:
            portal.stop()
        if server is not None:
            _stop_server(server, args.port)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_server(server: subprocess.Popen[bytes], port: int) -> None:
    """Stop the server this process started, and say "stopped" only once it is."""
    from deployments.server import stop

    if stop(server) and not _still_listening(port):
        print("Prefect server stopped.", flush=True)
    else:
        print(f"the Prefect server (pid {server.pid}) is still running; stop it with "
              f"`kill {server.pid}`", file=sys.stderr, flush=True)


def _still_listening(port: int, wait: float = 5.0) -> bool:
    """Whether the port stays taken after the server exited (its socket closes with it)."""
    from deployments.server import port_in_use

    deadline = time.monotonic() + wait
    while port_in_use(port):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    sys.exit(main())
