"""The VA's record commands as whole processes, against a floor: a bare Python process that
opens the same SQLite database with the same driver (sqlite3) and sends the very statements the
command sent (captured once from the command itself), in one transaction.

Each run starts from a fresh copy of the same prepared database (one client, one open blocker),
so every command does its first-time write; the command and the floor alternate. Prefect is not
running (PREFECT_API_URL points at a closed port): the wake-up costs one refused connection.

Each command is timed twice: run cold (the process imports the command line itself, as without
`make run`) and run warm (handed to a warm CLI process, deployments/warm.py, as `make run`
serves one), alternating with the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.common import HANDOFF, PY, ROOT, Part, child_json, fmt, load, log, median

COMMANDS: dict[str, list[str]] = {
    "status": ["status", "1"],
    "artifact add": ["artifact", "add", "1", "deal_terms_confirmed"],
    "kickoff schedule": ["kickoff", "schedule", "1", "--when", "2099-01-05T15:00"],
    "qa record": ["qa", "record", "1", "--pass"],
    "blocker open": ["blocker", "open", "1", "--type", "missing_access", "--critical"],
    "blocker resolve": ["blocker", "resolve", "1"],
    "followup log": ["followup", "log", "1", "--kind", "response"],
}

FLOOR = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA foreign_keys=ON")
for sql, params in json.load(open(sys.argv[2])):
    conn.execute(sql, params).fetchall()
conn.commit()
conn.close()
"""


def _env(home: Path, warm: str = "no-warm-process") -> dict[str, str]:
    return {**os.environ, "HANDOFF_HOME": str(home),
            "HANDOFF_DATABASE_URL": f"sqlite:///{home / 'handoff.db'}",
            "PREFECT_API_URL": "http://127.0.0.1:9/api", "HANDOFF_WARM_CLI_SOCKET": warm}


def _start_warm(log: Path, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A warm CLI process on a socket of its own, once it is ready; configured as the VA's
    calls are (`make run` and the VA's shell read the same settings)."""
    name = f"bench-{os.getpid()}"
    process = subprocess.Popen([PY, "-m", "deployments.warm"], cwd=ROOT,
                               env=_env(home, name),
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "ready" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the warm CLI process did not start: {log.read_text()}")
        time.sleep(0.1)
    return process, name


def _prepare(template: Path) -> None:
    env = _env(template)
    for args in (["db", "upgrade"],
                 ["onboard", "--client", "Bench Dental", "--segment", "smb", "--offer", "Growth",
                  "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
                  "--contact", "pat@bench.example", "--no-flow"],
                 ["blocker", "open", "1", "--type", "missing_access"],
                 ["status", "1"]):  # also keeps the year's holidays, as any first command does
        subprocess.run([str(HANDOFF), *args], env=env, check=True, capture_output=True)


def _fresh(template: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(template, target)


def capture(home: str, *args: str) -> dict[str, list[tuple[str, list[Any]]]]:
    """Run one command in this process and return the statements it sent to the database."""
    from sqlalchemy import event
    from typer.testing import CliRunner

    from db.session import get_engine
    from deployments.cli import app

    os.environ.update(_env(Path(home)))
    sent: list[tuple[str, list[Any]]] = []
    event.listen(get_engine(), "before_cursor_execute",
                 lambda conn, cursor, sql, params, *rest: sent.append((sql, list(params or ()))))
    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        raise RuntimeError(f"{args}: {result.output}")
    return {"statements": sent}


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_cli(repeats: int) -> dict[str, Any]:
    result: dict[str, Any] = {"load_before": load(), "repeats": repeats, "commands": {}}
    with tempfile.TemporaryDirectory(prefix="handoff-bench-cli-") as tmp:
        template, work = Path(tmp) / "template", Path(tmp) / "work"
        template.mkdir()
        _prepare(template)
        floor = Path(tmp) / "floor.py"
        floor.write_text(FLOOR)
        warm, socket_name = _start_warm(Path(tmp) / "warm.log", work)
        try:
            _bench_commands(result, template, work, floor, Path(tmp), repeats, socket_name)
        finally:
            warm.terminate()
            warm.wait(30)
    result["load_after"] = load()
    return result


def _bench_commands(result: dict[str, Any], template: Path, work: Path, floor: Path, tmp: Path,
                    repeats: int, socket_name: str) -> None:
    for name, args in COMMANDS.items():
        _fresh(template, work)
        statements = child_json("tests.bench.cli:capture", str(work), *args)["statements"]
        # The floor's transaction takes the write lock as the command's does.
        begun = [s for s in statements if s[0].startswith("BEGIN")][:1]
        script = tmp / f"{name.replace(' ', '_')}.json"
        script.write_text(json.dumps(begun + [s for s in statements
                                              if not s[0].startswith("BEGIN")]))
        command_s, floor_s, command_cpu, warm_s = [], [], [], []
        for _ in range(repeats):
            _fresh(template, work)
            wall, cpu = _timed([str(HANDOFF), *args], _env(work))
            command_s.append(wall)
            command_cpu.append(cpu)
            _fresh(template, work)
            warm_s.append(_timed([str(HANDOFF), *args], _env(work, socket_name))[0])
            _fresh(template, work)
            floor_s.append(_timed([PY, str(floor), str(work / "handoff.db"), str(script)],
                                  _env(work))[0])
        result["commands"][name] = {
            "statements": len(statements), "median_s": median(command_s),
            "cpu_s": median(command_cpu), "floor_s": median(floor_s),
            # Ratios of each run to the floor run beside it, then their median: what a load
            # change between runs moves, it moves on both sides of a pair.
            "ratio": median([c / f for c, f in zip(command_s, floor_s, strict=True)]),
            "warm_s": median(warm_s),
            "warm_ratio": median([w / f for w, f in zip(warm_s, floor_s, strict=True)])}
        log(f"cli: {name}: cold {median(command_s):.3f} s, warm {median(warm_s):.3f} s "
            f"(floor {median(floor_s):.3f} s)")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cli-repeats", type=int, default=7,
                        help="runs of each record command and of its floor (default 7)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return bench_cli(3 if args.quick else args.cli_repeats)


def table(r: dict[str, Any]) -> list[str]:
    lines = [f"The VA's record commands, whole process, median of {r['repeats']} "
             f"({r['load_before']} before, {r['load_after']} after); floor: bare Python + "
             "sqlite3 sending the same statements. Prefect not running. Warm: handed to the "
             "warm CLI process `make run` serves (deployments/warm.py). Ratios: the median of "
             "each run's ratio to the floor run beside it.", "",
             "| command | statements | cold wall | cold CPU | warm wall | floor | cold / floor | "
             "warm / floor |", "|---|---|---|---|---|---|---|---|"]
    for name, c in r["commands"].items():
        lines.append(f"| `{name}` | {c['statements']} | {fmt(c['median_s'])} s | "
                     f"{fmt(c['cpu_s'])} s | {fmt(c['warm_s'], 3)} s | {fmt(c['floor_s'], 3)} s "
                     f"| {fmt(c['ratio'], 1)}× | {fmt(c['warm_ratio'], 1)}× |")
    return lines


PART = Part("cli", run, table, order=5, arguments=arguments)
