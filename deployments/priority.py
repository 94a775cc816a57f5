"""Flow runs are background work: they run at a lower CPU priority than the people waiting on them.

In a burst (a `reconcile` after an outage, `handoff import`, a webhook storm) a few client runs
start at once, each a Python process busy for seconds. On a small machine they took the CPU the
VA's `handoff` commands, the portal and the Prefect API (the UI) needed. Niced, they still use
every idle cycle, but yield to a person's request the moment one comes.
"""

from __future__ import annotations

import os
import threading


def lower_run_priority(niceness: int) -> int:
    """Lower the CPU priority of the calling thread, and so of every process it starts from now on.

    On Linux a thread's nice value is its own, and a child process inherits its parent thread's:
    call this on the thread that runs the runner or worker, after starting what must keep normal
    priority (the Prefect server, the portal's thread). Returns the nice value now in force.
    """
    if not hasattr(os, "setpriority"):
        return 0
    tid = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, tid)
    if niceness > current:
        os.setpriority(os.PRIO_PROCESS, tid, niceness)
    return os.getpriority(os.PRIO_PROCESS, tid)
