"""Reading the playbook file: its shape checked before it is built, then validated; cached until
the file changes."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from db.playbook.model import Playbook, PlaybookError

MAX_PLAYBOOK_BYTES = 1 * 2**20
MAX_PLAYBOOK_DEPTH = 20  # the shipped playbook nests 5 levels
MAX_PLAYBOOK_NODES = 50_000  # scalars, mappings and sequences
# libyaml's safe loader where PyYAML was built with it (the wheels are): the playbook is read on
# every CLI command, and the pure-Python parser took a quarter of a second of each.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)




def _format_error(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"invalid playbook {path}: {loc}: {message}{more}"


def _line(event: yaml.Event) -> int | str:
    return event.start_mark.line + 1 if event.start_mark is not None else "?"


def _check_shape(text: str, path: Path) -> None:
    """Refuse a file too deep, too large or with aliases before building it (yaml builds
    recursively: a 100,000-level nesting is a RecursionError; an alias bomb expands to
    billions of values when validated)."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=SAFE_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_PLAYBOOK_DEPTH:
                raise PlaybookError(f"playbook {path} nests deeper than {MAX_PLAYBOOK_DEPTH} "
                                    f"levels (line {_line(event)})")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.AliasEvent):
            raise PlaybookError(f"playbook {path} uses a YAML alias (*{event.anchor}, line "
                                f"{_line(event)}); write the values out")
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_PLAYBOOK_NODES:
                raise PlaybookError(f"playbook {path} has more than {MAX_PLAYBOOK_NODES} "
                                    "values; it is not a playbook")


def load_playbook(path: Path) -> Playbook:
    """Read and validate a playbook file; raise PlaybookError naming the bad key."""
    try:
        if path.stat().st_size > MAX_PLAYBOOK_BYTES:
            raise PlaybookError(f"playbook {path} is over {MAX_PLAYBOOK_BYTES // 2**20} MiB; "
                                "it is not a playbook")
        text = path.read_text(encoding="utf-8")
        _check_shape(text, path)
        raw = yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 (a safe loader)
    except FileNotFoundError:
        raise PlaybookError(f"playbook file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise PlaybookError(f"playbook {path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        detail = str(exc).replace("\n", " ")
        raise PlaybookError(f"playbook {path} is not valid YAML: {detail}") from None
    if not isinstance(raw, dict):
        raise PlaybookError(f"playbook {path} must be a mapping of keys, got {type(raw).__name__}")
    try:
        return Playbook.model_validate(raw)
    except ValidationError as exc:
        raise PlaybookError(_format_error(path, exc)) from None


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float) -> Playbook:
    return load_playbook(Path(path))


def get_playbook(path: Path | None = None) -> Playbook:
    """The playbook at the configured path, re-read when the file changes."""
    from db.settings import get_settings

    target = path or get_settings().playbook_path
    try:
        mtime = target.stat().st_mtime
    except FileNotFoundError:
        raise PlaybookError(f"playbook file {target} does not exist") from None
    return _cached(str(target), mtime)
