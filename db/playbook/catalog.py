"""The message templates a playbook may name: templates/catalog.yaml, read once for validation.

tasks/mail/render.py renders from the same file; here only the names, audiences and the fields
each template needs are read, so the loader can refuse a template it could never send."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
# What a message sent on entering or leaving a stage can say (tasks/comms/context.py), and the
# packet, which the packet step assembles.
STAGE_MESSAGE_FIELDS = frozenset({"business", "client", "owner", "next_action", "due", "missing",
                                  "done_items", "first_milestone", "packet"})


@dataclass(frozen=True)
class TemplateNeeds:
    audience: str
    needs: frozenset[str]


@cache
def template_needs() -> dict[str, TemplateNeeds]:
    """Every message template by name (blocker_<type> from its file), with what it needs."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = yaml.load((TEMPLATES / "catalog.yaml").read_text(encoding="utf-8"),
                    Loader=loader)  # noqa: S506 (a safe loader)
    specs = {name: TemplateNeeds(v["audience"], frozenset(v.get("needs", ())))
             for name, v in raw.items()}
    base = specs.pop("blocker_escalation")  # shared by blocker_<type>; not a file itself
    for path in (TEMPLATES / "mail").glob("blocker_*.html"):
        specs[path.stem] = base
    return specs
