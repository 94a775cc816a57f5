"""The waiting part's second runner: the naive design and the empty flow (the stage move's
floor), served as handoff's runner serves (deployments/serve.py `serve_all`): each flow added to
a Runner, each run a spawned process that yields the CPU from its first import, the runner's own
thread at normal priority, the same poll.

    python -m tests.bench.floor_runner
"""

from __future__ import annotations

from deployments.priority import lower_spawned_run_priority

lower_spawned_run_priority(__name__)


def main() -> None:
    import asyncio

    from prefect.runner import Runner

    from tests.bench.stagemove import empty_flow
    from tests.bench.waiting import naive_onboarding

    runner = Runner(limit=200)
    runner.add_flow(naive_onboarding, name="naive")
    runner.add_flow(empty_flow, name="empty")
    asyncio.run(runner.start())


if __name__ == "__main__":
    main()
