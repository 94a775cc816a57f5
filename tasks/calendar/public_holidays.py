"""Public holidays by country and year, kept on disk once computed.

The holidays package imports ~280 modules and computes a year in a few hundred milliseconds;
every record command needs next-action due dates, so each year is computed once and kept as a
small JSON file named by everything it depends on (the package's version, country, subdivision,
year). A damaged or missing file is computed again; a read-only home computes in each process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

Store = Callable[[], Path]


def store_path(store: Store | None, country: str, subdivision: str | None,
               year: int) -> Path | None:
    """The file a year's holidays are kept in, or None when nothing is kept."""
    if store is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("holidays")
    except PackageNotFoundError:
        return None
    return store() / f"holidays-{package}-{country}-{subdivision or ''}-{year}.json"


def read_kept(path: Path | None) -> frozenset[dt.date] | None:
    """A kept year, or None when it is not kept yet or unreadable."""
    try:
        return frozenset(dt.date.fromisoformat(d) for d in json.loads(path.read_text())) \
            if path else None
    except (OSError, ValueError, TypeError):
        return None  # not kept yet, or unreadable: computed again


def keep(path: Path | None, days: frozenset[dt.date]) -> None:
    """Write a year whole (a reader never sees half a file, whoever writes at the same time)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as out:
            json.dump(sorted(d.isoformat() for d in days), out)
        os.replace(out.name, path)
    except OSError:
        pass  # a read-only home: computed in each process instead


def public_holidays(country: str, subdivision: str | None, year: int,
                    store: Store | None) -> frozenset[dt.date]:
    """The country's public holidays in ``year``: kept, or computed and kept."""
    path = store_path(store, country, subdivision, year)
    kept = read_kept(path)
    if kept is not None:
        return kept
    import holidays

    days = frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year).keys())
    keep(path, days)
    return days
