"""One shared Jinja2 Environment; every word a person reads lives in templates/."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, UndefinedError, select_autoescape

from db.playbook import SAFE_LOADER

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")


class TemplateError(ValueError):
    """A template could not render: a declared field is missing or the subject is unsafe."""


def markdown_escape(value: object) -> str:
    """Client text made inert inside Markdown (and any HTML the renderer would pass through)."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = " ".join(text.splitlines())
    return _MD_SPECIAL.sub(r"\\\1", text)


@cache
def environment() -> Environment:
    """The shared Environment: autoescaped HTML, StrictUndefined so a missing field fails."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown_escape
    return env


@dataclass(frozen=True)
class TemplateSpec:
    """What the catalog says about one message template."""

    name: str
    audience: Literal["client", "team", "founder"]
    lane: str
    needs: tuple[str, ...]
    subject: str


@cache
def catalog() -> dict[str, TemplateSpec]:
    """templates/catalog.yaml, plus one blocker_<type> entry per blocker script file."""
    raw = yaml.load((TEMPLATES / "catalog.yaml").read_text(encoding="utf-8"),
                    Loader=SAFE_LOADER)  # noqa: S506 (a safe loader)
    specs = {name: TemplateSpec(name=name, audience=v["audience"], lane=v["lane"],
                                needs=tuple(v["needs"]), subject=v["subject"])
             for name, v in raw.items()}
    base = specs.pop("blocker_escalation")  # shared by blocker_<type>; not a file itself
    for path in sorted((TEMPLATES / "mail").glob("blocker_*.html")):
        name = path.stem
        specs[name] = TemplateSpec(name=name, audience=base.audience, lane=base.lane,
                                   needs=base.needs, subject=base.subject)
    return specs


@dataclass(frozen=True)
class Rendered:
    """A rendered message: subject, HTML and a real plain-text alternative."""

    template: str
    subject: str
    html: str
    text: str


def render_message(name: str, context: dict[str, Any]) -> Rendered:
    """Render a catalog template; a missing declared field or a multi-line subject fails loudly."""
    spec = catalog().get(name)
    if spec is None:
        raise TemplateError(f"template {name!r} is not in templates/catalog.yaml")
    absent = [field for field in spec.needs if field not in context]
    if absent:
        raise TemplateError(f"template {name!r} needs field(s) {', '.join(absent)}")
    env = environment()
    try:
        subject = env.from_string(spec.subject).render(context).strip()
        html = env.get_template(f"mail/{name}.html").render(context)
        text = env.get_template(f"mail/{name}.txt").render(context)
    except UndefinedError as exc:
        raise TemplateError(f"template {name!r}: {exc.message}") from None
    if "\n" in subject or "\r" in subject:
        raise TemplateError(f"template {name!r} rendered a subject with a line break: {subject!r}")
    return Rendered(template=name, subject=subject, html=html, text=text)


def render_page(path: str, context: dict[str, Any]) -> str:
    """Render a non-mail template (packet markdown, reports)."""
    try:
        return environment().get_template(path).render(context)
    except UndefinedError as exc:
        raise TemplateError(f"template {path!r}: {exc.message}") from None


def calendar_invite(*, uid: str, start: dt.datetime, minutes: int, summary: str,
                    organizer: str, attendees: list[str], description: str) -> bytes:
    """An RFC 5545 invite (METHOD:REQUEST) for the kickoff, in UTC."""

    def esc(value: str) -> str:
        return (value.replace("\\", "\\\\").replace(";", r"\;").replace(",", r"\,")
                .replace("\r", "").replace("\n", r"\n"))

    def stamp(value: dt.datetime) -> str:
        return value.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")

    def fold(line: str) -> str:
        # RFC 5545 3.1: lines longer than 75 octets continue on a line starting with a space.
        out: list[bytes] = []
        current = b""
        for char in line:
            encoded = char.encode()
            if len(current) + len(encoded) > (75 if not out else 74):
                out.append(current)
                current = b""
            current += encoded
        out.append(current)
        return "\r\n ".join(part.decode() for part in out)

    end = start + dt.timedelta(minutes=minutes)
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//handoff//onboarding//EN", "METHOD:REQUEST",
        "BEGIN:VEVENT", f"UID:{uid}", f"DTSTAMP:{stamp(dt.datetime.now(dt.UTC))}",
        f"DTSTART:{stamp(start)}",
        f"DTEND:{stamp(end)}", f"SUMMARY:{esc(summary)}", f"DESCRIPTION:{esc(description)}",
        f"ORGANIZER:mailto:{organizer}",
        *[f"ATTENDEE;ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:{a}" for a in attendees],
        "STATUS:CONFIRMED", "SEQUENCE:0", "END:VEVENT", "END:VCALENDAR",
    ]
    return ("\r\n".join(fold(line) for line in lines) + "\r\n").encode()
