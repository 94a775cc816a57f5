"""Where Python writes no bytecode as it imports (PYTHONDONTWRITEBYTECODE, common in containers),
`serve` writes the project's once as it starts, so each run's fresh process reads it instead of
compiling every module of the flow again."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serve_writes_the_bytecode_runs_would_otherwise_compile_each_time() -> None:
    source = ROOT / "flows" / "onboarding.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.unlink(missing_ok=True)
    code = "from deployments.serve import compile_sources; print(compile_sources())"
    said = subprocess.run([sys.executable, "-B", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.split()
    assert said == ["True"]
    assert cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime
    # Where Python writes its own bytecode as it imports, nothing is done here.
    said = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={k: v for k, v in os.environ.items()
                                                        if k != "PYTHONDONTWRITEBYTECODE"}
                          ).stdout.split()
    assert said == ["False"]
