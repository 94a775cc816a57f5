"""The operating model, loaded from deployments/playbook.yaml into validated pydantic models."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, model_validator

from db.questionnaire import Portal
from db.validation import HandoffError

STAGE_ORDER = (
    "close_confirmation",
    "intake_completion",
    "kickoff_alignment",
    "setup_execution",
    "ready_to_deliver",
)
WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class PlaybookError(HandoffError):
    """The playbook file is missing, unreadable or invalid; the message names the bad key."""


class TimeUnit(StrEnum):
    """How an SLA or escalation delay is counted."""

    BUSINESS_HOURS = "business_hours"
    BUSINESS_DAYS = "business_days"
    CLOCK_HOURS = "clock_hours"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Model):
    name: str = Field(min_length=1)
    email: EmailStr


class Business(_Model):
    name: str = Field(min_length=1)
    founder: Person
    delivery_team: Person
    sender: Person


class Hours(_Model):
    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _ordered(self) -> Hours:
        for name, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is not None:
                raise ValueError(f"{name} {value} must be a wall-clock time like 09:00 "
                                 "(the zone is calendar.timezone)")
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class HolidaySource(_Model):
    country: str | None = None
    subdivision: str | None = None


class Calendar(_Model):
    timezone: str
    workdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    hours: Hours
    holidays: HolidaySource = HolidaySource()
    closed_dates: list[dt.date] = []

    @model_validator(mode="after")
    def _known_zone(self) -> Calendar:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone {self.timezone!r} is not an IANA zone (e.g. 'America/New_York')"
            ) from None
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Lane(_Model):
    name: str
    owner: EmailStr
    backup: EmailStr


class Item(_Model):
    """An artifact or checklist item that must exist before a client may leave a stage."""

    key: Key
    label: str = Field(min_length=1)
    lane: str
    system: bool = False  # recorded by handoff itself (e.g. packet delivered), not by a person
    from_client: bool = False  # the client supplies it: reminders chase it, its clock waits on them
    client_label: str | None = None  # how a client message names it

    @model_validator(mode="after")
    def _client_wording(self) -> Item:
        if self.from_client and not self.client_label:
            raise ValueError(f"item {self.key!r} comes from the client; give it a client_label")
        return self


class StageSla(_Model):
    within: float = Field(gt=0)
    unit: TimeUnit
    from_: Literal["stage_entered"] = Field("stage_entered", alias="from")


class Gate(StrEnum):
    QA_PASSED = "qa_passed"
    NO_OPEN_CRITICAL_BLOCKER = "no_open_critical_blocker"


class Stage(_Model):
    key: Key
    name: str
    owner_role: Literal["va", "founder"]
    lane: str
    sla: StageSla
    on_enter: list[Key] = []
    on_exit: list[Key] = []
    artifacts: list[Item] = Field(min_length=1)
    checklists: list[str] = []
    gates: list[Gate] = []


class Sla(_Model):
    template: Key
    lane: str
    unit: TimeUnit
    within: float | None = Field(None, gt=0)
    every: float | None = Field(None, gt=0)
    every_min: float | None = Field(None, gt=0)
    every_max: float | None = Field(None, gt=0)
    from_: str | None = Field(None, alias="from")
    until: str | None = None
    while_: str | None = Field(None, alias="while")

    @model_validator(mode="after")
    def _one_rhythm(self) -> Sla:
        if self.within is None and self.every is None and self.every_min is None:
            raise ValueError("an SLA needs 'within', 'every' or 'every_min'/'every_max'")
        if (self.every_min is None) != (self.every_max is None):
            raise ValueError("'every_min' and 'every_max' go together")
        if self.every_min and self.every_max and self.every_max < self.every_min:
            raise ValueError(f"every_max {self.every_max} is less than every_min {self.every_min}")
        return self


class EscalationStep(_Model):
    to: Literal["owner", "backup", "founder"]
    after: float = Field(gt=0)
    unit: TimeUnit


class BlockerType(_Model):
    label: str
    lane: str
    template: Key
    escalation: list[EscalationStep] = Field(min_length=1)
    founder_boundary: str | None = None


class Delay(_Model):
    after: float = Field(gt=0)
    unit: TimeUnit


class Escalations(_Model):
    no_response_after_reminder_cycles: int = Field(ge=1)
    critical_dependency_unresolved: Delay
    kickoff_beyond_committed_window: bool = True
    scope_conflict_affecting_timeline: bool = True


class KpiRule(_Model):
    kind: Literal["rise_pct", "above", "rising", "rising_while"]
    pct: float | None = None
    value: float | None = None
    weeks: int | None = Field(None, ge=1)
    other_metric: str | None = None
    other_at_least: float | None = None


class KpiThreshold(_Model):
    key: Key
    metric: Key
    rule: KpiRule
    action: str = Field(min_length=1)
    owner_lane: str


class PacketSection(_Model):
    key: Key
    title: str


class DealOwner(_Model):
    """One row of the CRM owner table: who runs the onboardings of this CRM user's deals."""

    source: Literal["hubspot", "pipedrive", "stripe", "generic"]
    crm_owner: str = Field(min_length=1)  # the CRM's owner id (HubSpot, Pipedrive) or email
    owner: EmailStr
    backup: EmailStr


class DealFields(_Model):
    """Names of the CRM properties / Stripe metadata keys that carry these onboarding fields."""

    segment: str = "handoff_segment"
    offer: str = "handoff_offer"
    terms: str = "handoff_terms"
    scope: str = "handoff_scope"
    kickoff_by: str = "handoff_kickoff_by"
    first_milestone: str = "handoff_first_milestone"


class Deals(_Model):
    """How a won deal from a CRM or a payment becomes an onboarding."""

    lane: str = "A"  # its owner and backup run the onboarding unless `owners` maps the deal
    owners: list[DealOwner] = []
    segment: Annotated[str, Field(min_length=1)] = "smb"  # when the deal does not say
    offer: Annotated[str, Field(min_length=1)] = "Standard onboarding"
    hubspot_won_stage: Annotated[str, Field(min_length=1)] = "closedwon"  # internal stage id
    fields: DealFields = DealFields()
    # True: terms and scope in the deal confirm the close by themselves. False: the onboarding
    # waits at close confirmation until a VA confirms them.
    terms_from_deal: bool = False


class Pause(_Model):
    within: float = Field(gt=0)
    unit: TimeUnit


class Inbox(_Model):
    """What the inbox sweep does with what it reads: a client reply pauses the reminders."""

    pause_after_reply: Pause = Pause(within=1, unit=TimeUnit.BUSINESS_DAYS)


class InputLimits(_Model):
    """How far a time a person types may stray; beyond these it is refused as a typo."""

    future_minutes: Annotated[int, Field(ge=0)] = 5  # a fact recorded ahead of now (skew)
    before_close_days: Annotated[int, Field(ge=0)] = 30  # a fact this long before the close
    close_age_days: Annotated[int, Field(ge=1)] = 365  # a deal recorded as closed this long ago


class Playbook(_Model):
    version: str = Field(min_length=1)
    business: Business
    calendar: Calendar
    lanes: dict[str, Lane] = Field(min_length=1)
    stages: list[Stage]
    checklists: dict[Key, list[Item]] = {}
    slas: dict[Key, Sla]
    blockers: dict[Key, BlockerType] = Field(min_length=1)
    escalations: Escalations
    kpi_thresholds: list[KpiThreshold] = []
    founder_boundaries: dict[Key, str] = Field(min_length=1)
    packet_sections: list[PacketSection] = Field(min_length=1)
    risk_categories: dict[Key, str] = {}
    interruption_categories: list[Key] = Field(min_length=1)
    inbox: Inbox = Inbox()
    deals: Deals = Deals()
    alerts: dict[str, list[Key]] = {}  # lane -> alert channel names (URLs: HANDOFF_ALERT_URLS)
    input_limits: InputLimits = InputLimits()

    @model_validator(mode="after")
    def _deal_and_alert_lanes(self) -> Playbook:
        self._check_lane("deals.lane", self.deals.lane)
        for lane in self.alerts:
            self._check_lane(f"alerts.{lane}", lane)
        return self

    portal: Portal | None = None  # the client portal; without it the portal shows status only

    @model_validator(mode="after")
    def _consistent(self) -> Playbook:
        keys = [s.key for s in self.stages]
        if tuple(keys) != STAGE_ORDER:
            missing = [k for k in STAGE_ORDER if k not in keys]
            detail = f"missing {', '.join(missing)}" if missing else f"got {', '.join(keys)}"
            raise ValueError(
                f"stages must be exactly, in order, {', '.join(STAGE_ORDER)} ({detail})"
            )
        seen: dict[str, str] = {}
        for where, item in self._all_items():
            if item.key in seen:
                raise ValueError(f"{where}: item key {item.key!r} is also used in {seen[item.key]}")
            seen[item.key] = where
            self._check_lane(where, item.lane)
        for stage in self.stages:
            self._check_lane(f"stages.{stage.key}.lane", stage.lane)
            for name in stage.checklists:
                if name not in self.checklists:
                    raise ValueError(f"stages.{stage.key}.checklists: unknown checklist {name!r}")
        for key, sla in self.slas.items():
            self._check_lane(f"slas.{key}.lane", sla.lane)
            for ref in (sla.until, sla.while_):
                if ref is not None and ref not in keys:
                    raise ValueError(f"slas.{key}: unknown stage {ref!r}")
        for key, blocker in self.blockers.items():
            self._check_lane(f"blockers.{key}.lane", blocker.lane)
            if blocker.founder_boundary and blocker.founder_boundary not in self.founder_boundaries:
                raise ValueError(f"blockers.{key}.founder_boundary: unknown boundary "
                                 f"{blocker.founder_boundary!r}")
        for threshold in self.kpi_thresholds:
            self._check_lane(f"kpi_thresholds.{threshold.key}.owner_lane", threshold.owner_lane)
        return self

    @model_validator(mode="after")
    def _portal_consistent(self) -> Playbook:
        if self.portal is None:
            return self
        keys = [s.key for s in self.stages]
        for key in self.portal.stages:
            if key not in keys:
                raise ValueError(f"portal.stages: unknown stage {key!r} "
                                 f"(stages: {', '.join(keys)})")
        for key in keys:
            if key not in self.portal.stages:
                raise ValueError(f"portal.stages: no client words for stage {key!r}")
        items = {i.key for _where, i in self._all_items()}
        questionnaire = self.portal.questionnaire
        for where, recorded in [("portal.questionnaire.records", questionnaire.records),
                                *[(f"portal.questionnaire.sections.{s.key}.records", s.records)
                                  for s in questionnaire.sections]]:
            for key in recorded:
                if key not in items:
                    raise ValueError(f"{where}: unknown artifact {key!r}")
        return self

    def _check_lane(self, where: str, lane: str) -> None:
        if lane not in self.lanes:
            raise ValueError(f"{where}: unknown lane {lane!r} (lanes: {', '.join(self.lanes)})")

    def _all_items(self) -> list[tuple[str, Item]]:
        items = [(f"stages.{s.key}.artifacts", a) for s in self.stages for a in s.artifacts]
        items += [(f"checklists.{n}", i) for n, lst in self.checklists.items() for i in lst]
        return items

    # -- lookups used everywhere -------------------------------------------------------------

    def stage(self, key: str) -> Stage:
        """The stage with this key, or a PlaybookError naming the known ones."""
        for stage in self.stages:
            if stage.key == key:
                return stage
        raise PlaybookError(f"unknown stage {key!r}; expected one of {', '.join(STAGE_ORDER)}")

    def next_stage(self, key: str) -> Stage | None:
        """The stage after this one, or None after the last."""
        index = STAGE_ORDER.index(self.stage(key).key)
        return self.stages[index + 1] if index + 1 < len(self.stages) else None

    def required_items(self, stage_key: str) -> list[Item]:
        """Artifacts plus checklist items that must exist before leaving a stage."""
        stage = self.stage(stage_key)
        items = list(stage.artifacts)
        for name in stage.checklists:
            items.extend(self.checklists[name])
        return items

    def item(self, key: str) -> tuple[Stage, Item]:
        """The stage an artifact/checklist item belongs to, and the item."""
        for stage in self.stages:
            for item in self.required_items(stage.key):
                if item.key == key:
                    return stage, item
        raise PlaybookError(
            f"unknown artifact {key!r}; see 'handoff playbook show' for the artifact keys"
        )

    @property
    def all_item_keys(self) -> list[str]:
        return [i.key for s in self.stages for i in self.required_items(s.key)]

    @property
    def workday_numbers(self) -> frozenset[int]:
        return frozenset(WEEKDAYS[d] for d in self.calendar.workdays)


def _format_error(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"invalid playbook {path}: {loc}: {message}{more}"


MAX_PLAYBOOK_BYTES = 1 * 2**20
MAX_PLAYBOOK_DEPTH = 20  # the shipped playbook nests 5 levels
MAX_PLAYBOOK_NODES = 50_000  # scalars, mappings and sequences
# libyaml's safe loader where PyYAML was built with it (the wheels are): the playbook is read on
# every CLI command, and the pure-Python parser took a quarter of a second of each.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
