"""Prefect never phones home: the machine may be offline, and nobody here asked for telemetry."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def stay_offline(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Turn Prefect's telemetry off in `env` (default: this process) unless set explicitly."""
    target: MutableMapping[str, str] = os.environ if env is None else env
    for name, value in OFFLINE.items():
        target.setdefault(name, value)
    return target
