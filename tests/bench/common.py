"""What every bench part shares: paths, logging, medians, memory and statement counters, the
machine's description, child processes that answer in JSON, and the shape of a part."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "bench"
CACHE = OUT / "cache"
PY = sys.executable
HANDOFF = Path(PY).with_name("handoff")


@dataclass(frozen=True)
class Part:
    """One subject of `make bench`: a module of this package with a module-level `PART`.

    `run` measures and returns JSON-able results; `table` turns them into markdown lines for
    the report; `arguments` adds the part's own command-line options; `order` places it in the
    run (cheap parts first); `default` says whether `make bench` runs it without `--only`.
    A result may carry `preparation_s` ({what: seconds}) for one-off work such as seeding,
    which the report's first line shows apart from the measurements.
    """

    name: str
    run: Callable[[argparse.Namespace], dict[str, Any]]
    table: Callable[[dict[str, Any]], list[str]]
    order: int = 50
    default: bool = True
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class PeakRss:
    """Samples this process's RSS every 20 ms; `peak` is the highest seen inside the block."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid or os.getpid())
        self.peak = 0
        self.before = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.before = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.before) / 2**20


class StatementCounter:
    """Counts SQL statements sent to the database (SQLAlchemy `before_cursor_execute`)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.phase = "all"

    def attach(self, engine: Any) -> None:
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.counts[self.phase] = self.counts.get(self.phase, 0) + 1

    def reset(self) -> None:
        self.counts = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (f"{psutil.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, shared and noisy")


def child_json(target: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 1200) -> Any:
    """Run `python -m tests.bench _run MODULE:FUNCTION ARGS` in a fresh process and return the
    JSON it prints last (its log and errors go straight to this process's stderr, so progress
    shows as it happens). The function gets ARGS as strings."""
    result = subprocess.run([PY, "-m", "tests.bench", "_run", target, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env=env or os.environ.copy(),
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"bench {target} {' '.join(args)} failed (exit "
                           f"{result.returncode}; its traceback is above)")
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"bench {target} {' '.join(args)} printed no result:\n"
                       f"{result.stdout[-2000:]}")


def fmt(value: float, digits: int = 2) -> str:
    """A number for the report; n/a where a measurement is missing (NaN)."""
    return "n/a" if value != value else f"{value:.{digits}f}"


def load() -> str:
    """The machine's load averages, to print beside every number measured on a shared host."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f} on {os.cpu_count()} cores"


def checkpoint(path: Path) -> None:
    """Fold the write-ahead log into the database file, so a plain copy is complete."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def fresh_copy(source: Path, target: Path) -> str:
    for stale in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
        stale.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    return f"sqlite:///{target}"
