"""`make bench`: the parts of this package side by side with their floors, in one run.

    python -m tests.bench [--only mail,sweeps,...] [--quick] [each part's own options]
    python -m tests.bench --list

Writes var/bench/results.json and var/bench/results.md and prints the table. Every measurement
that is compared with a floor alternates the two in the same process, so a noisy neighbour slows
both; the table shows medians. Parts not run by default (`make bench-scale`) run when named in
`--only`.

Internal: `python -m tests.bench _run MODULE:FUNCTION ARG...` calls one function in a fresh
process (so peak memory is per measurement) and prints its JSON result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import pkgutil
import sys
import time
from typing import Any

import tests.bench
from tasks.prefect.offline import stay_offline
from tests.bench.common import OUT, Part, load, log, machine


def parts() -> list[Part]:
    """Every module of the package with a `PART`, in run order."""
    found = []
    for module in pkgutil.iter_modules(tests.bench.__path__):
        if module.name.startswith("_"):
            continue
        part = getattr(importlib.import_module(f"tests.bench.{module.name}"), "PART", None)
        if isinstance(part, Part):
            found.append(part)
    return sorted(found, key=lambda p: (p.order, p.name))


def report(results: dict[str, Any], chosen: list[Part]) -> str:
    phases = results.get("phases_s", {})
    prep = results.get("preparation_s", {})
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
    made = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in prep.items() if seconds)
    lines = [f"Machine: {results['machine']}. Run {results['started']}, "
             f"{results['total_s']:.0f} s end to end ({spent}"
             + (f"; of which one-off preparation, not cached yet: {made}" if made else "")
             + f"). Times are medians. {results['load_before']} before, "
             f"{results['load_after']} after.", ""]
    number = 0
    for part in chosen:
        if part.name in results:
            number += 1
            body = part.table(results[part.name])
            lines += [f"{number}. {body[0]}", *body[1:], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    available = parts()
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("--only", default=",".join(p.name for p in available if p.default),
                        help="comma-separated parts: "
                             + ", ".join(p.name + ("" if p.default else " (not by default)")
                                         for p in available))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--list", action="store_true", help="list the parts and exit")
    for part in available:
        if part.arguments is not None:
            part.arguments(parser)
    args = parser.parse_args(argv)
    if args.list:
        for part in available:
            print(f"{part.name}{'' if part.default else '  (only when named)'}")
        return 0
    only = set(args.only.split(","))
    unknown = only - {p.name for p in available}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; expected some of "
                     + ", ".join(p.name for p in available))
    chosen = [p for p in available if p.name in only]
    stay_offline()
    OUT.mkdir(parents=True, exist_ok=True)
    begun = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(),
                               "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "quick": args.quick, "load_before": load(), "phases_s": {},
                               "preparation_s": {}}
    partial = OUT / "results.partial.json"
    for part in chosen:
        log(f"{part.name} ({load()})")
        started = time.perf_counter()
        results[part.name] = part.run(args)
        results["phases_s"][part.name] = round(time.perf_counter() - started, 1)
        for what, seconds in results[part.name].get("preparation_s", {}).items():
            results["preparation_s"][what] = results["preparation_s"].get(what, 0) + seconds
        partial.write_text(json.dumps(results, indent=2, default=str))
    results["load_after"] = load()
    results["total_s"] = time.perf_counter() - begun
    markdown = report(results, chosen)
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (OUT / "results.md").write_text(markdown + "\n")
    print(markdown)
    return 0


def run_function(target: str, args: list[str]) -> int:
    """`_run MODULE:FUNCTION ARG...`: call it here and print its JSON result, if any."""
    module, _, name = target.partition(":")
    result = getattr(importlib.import_module(module), name)(*args)
    if result is not None:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_run":
        sys.exit(run_function(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
