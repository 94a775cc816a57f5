"""Flow runs are background work: they run at a lower CPU priority than the people waiting on them.

In a burst (a `reconcile` after an outage, `handoff import`, a webhook storm) a few client runs
start at once, each a Python process busy for seconds. On a small machine they took the CPU the
VA's `handoff` commands, the portal and the Prefect API (the UI) needed. Niced, they still use
every idle cycle, but yield to a person's request the moment one comes.

Only the runs: the runner's own thread keeps normal priority. It is cheap (a poll a second), and
niced, each poll would wait behind every busy process on a loaded machine before a resumed run is
even picked up.
"""

from __future__ import annotations

import os
import threading


def lower_run_priority(niceness: int) -> int:
    """Lower the CPU priority of the calling thread, and so of every process it starts from now on.

    On Linux a thread's nice value is its own, and a child process inherits its parent thread's:
    call this on the thread that runs a worker (whose runs are its child processes), after
    starting what must keep normal priority. Returns the nice value now in force.
    """
    if not hasattr(os, "setpriority"):
        return 0
    tid = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, tid)
    if niceness > current:
        os.setpriority(os.PRIO_PROCESS, tid, niceness)
    return os.getpriority(os.PRIO_PROCESS, tid)


def lower_spawned_run_priority(module_name: str) -> bool:
    """Lower this process's priority when it is a flow run the runner spawned; say whether it is.

    Call it at the top of the runner's main module with `__name__`. A runner given the flows
    themselves (`Runner.add_flow`, as deployments/serve.py does) starts each run in a process of
    its own with multiprocessing's spawn method, which first re-imports the parent's main module
    under the name `__mp_main__` (a main module named `__main__`, run as `python -m package`,
    is not re-imported: this then never sees the run). So the run yields the CPU from its first
    import on (Prefect's and the flow's, most of a start's CPU), while the runner's thread, which
    polls for runs to start, keeps normal priority.
    """
    if module_name != "__mp_main__":
        return False
    from db.settings import get_settings

    lower_run_priority(get_settings().run_niceness)
    return True
