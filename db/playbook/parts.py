"""The playbook's sections, each a frozen pydantic model that refuses unknown keys."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class TimeUnit(StrEnum):
    """How an SLA or escalation delay is counted."""

    BUSINESS_HOURS = "business_hours"
    BUSINESS_DAYS = "business_days"
    CLOCK_HOURS = "clock_hours"


class PlaybookModel(BaseModel):
    """Every section: frozen, and an unknown key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(PlaybookModel):
    name: str = Field(min_length=1)
    email: EmailStr


class Business(PlaybookModel):
    name: str = Field(min_length=1)
    founder: Person
    delivery_team: Person
    sender: Person


class Hours(PlaybookModel):
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


class ClientHours(Hours):
    """When a client with a known timezone may be mailed: these hours on these weekdays in the
    client's own zone (no holidays: the client's country is not known)."""

    workdays: Annotated[list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]],
                        Field(min_length=1)] = ["mon", "tue", "wed", "thu", "fri"]


class HolidaySource(PlaybookModel):
    country: str | None = None
    subdivision: str | None = None


class Calendar(PlaybookModel):
    timezone: str
    workdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    hours: Hours
    holidays: HolidaySource = HolidaySource()
    closed_dates: list[dt.date] = []
    client_hours: ClientHours = ClientHours(start=dt.time(9), end=dt.time(17))

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


class Lane(PlaybookModel):
    name: str
    owner: EmailStr
    backup: EmailStr


class Item(PlaybookModel):
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


class StageSla(PlaybookModel):
    within: float = Field(gt=0)
    unit: TimeUnit
    # What the clock counts from: the stage's entry, or the deal's close (a deadline that the
    # time spent in earlier stages eats into).
    from_: Literal["stage_entered", "closed_at"] = Field("stage_entered", alias="from")


class Gate(StrEnum):
    QA_PASSED = "qa_passed"
    NO_OPEN_CRITICAL_BLOCKER = "no_open_critical_blocker"


class Stage(PlaybookModel):
    key: Key
    name: str
    lane: str
    sla: StageSla
    on_enter: list[Key] = []
    on_exit: list[Key] = []
    artifacts: list[Item] = Field(min_length=1)
    checklists: list[str] = []
    gates: list[Gate] = []


class CadenceEnd(StrEnum):
    """What a reminder cadence does from the reminder that arms the no-response escalation."""

    PAUSE = "pause"  # no more reminders until the client answers
    SLOW = "slow"  # reminders go on, twice as far apart
    STOP = "stop"  # that reminder is the stage's last; a person takes over


class Sla(PlaybookModel):
    template: Key
    lane: str
    unit: TimeUnit
    within: float | None = Field(None, gt=0)
    every: float | None = Field(None, gt=0)
    every_min: float | None = Field(None, gt=0)
    every_max: float | None = Field(None, gt=0)
    # What a 'within' clock counts from: closed_at, stage_entered (of the stage the message is
    # sent in), stage_entered:<stage>, or an artifact key (its recorded time); checked in model.
    from_: str | None = Field(None, alias="from")
    until: str | None = None
    while_: str | None = Field(None, alias="while")
    max_cycles: int | None = Field(None, ge=1)  # reminders at most, per stage
    at_escalation: CadenceEnd | None = None  # None: reminders go on at the same pace

    @model_validator(mode="after")
    def _one_rhythm(self) -> Sla:
        if self.within is None and self.every is None and self.every_min is None:
            raise ValueError("an SLA needs 'within', 'every' or 'every_min'/'every_max'")
        if (self.every_min is None) != (self.every_max is None):
            raise ValueError("'every_min' and 'every_max' go together")
        if self.every_min and self.every_max and self.every_max < self.every_min:
            raise ValueError(f"every_max {self.every_max} is less than every_min {self.every_min}")
        if self.from_ is not None and self.within is None:
            raise ValueError(f"'from: {self.from_}' needs 'within' (a rhythm counts from the "
                             "previous message)")
        if self.every_min is None and (self.max_cycles or self.at_escalation):
            raise ValueError("max_cycles and at_escalation end a reminder cadence "
                             "('every_min'/'every_max'); an 'every' update runs while its "
                             "stage lasts")
        return self


class EscalationStep(PlaybookModel):
    to: Literal["owner", "backup", "founder"]
    after: float = Field(gt=0)
    unit: TimeUnit


class BlockerType(PlaybookModel):
    label: str
    lane: str
    template: Key
    escalation: list[EscalationStep] = Field(min_length=1)
    founder_boundary: str | None = None


class Delay(PlaybookModel):
    after: float = Field(gt=0)
    unit: TimeUnit


class Escalations(PlaybookModel):
    no_response_after_reminder_cycles: int = Field(ge=1)
    critical_dependency_unresolved: Delay
    kickoff_beyond_committed_window: bool = True
    scope_conflict_affecting_timeline: bool = True


class KpiRule(PlaybookModel):
    kind: Literal["rise_pct", "above", "rising", "rising_while"]
    pct: float | None = None
    value: float | None = None
    weeks: int | None = Field(None, ge=1)
    other_metric: str | None = None
    other_at_least: float | None = None


class KpiThreshold(PlaybookModel):
    key: Key
    metric: Key
    rule: KpiRule
    action: str = Field(min_length=1)
    owner_lane: str


class PacketSection(PlaybookModel):
    key: Key
    title: str


class DealOwner(PlaybookModel):
    """One row of the CRM owner table: who runs the onboardings of this CRM user's deals."""

    source: Literal["hubspot", "pipedrive", "stripe", "generic"]
    crm_owner: str = Field(min_length=1)  # the CRM's owner id (HubSpot, Pipedrive) or email
    owner: EmailStr
    backup: EmailStr


class DealFields(PlaybookModel):
    """Names of the CRM properties / Stripe metadata keys that carry these onboarding fields."""

    segment: str = "handoff_segment"
    offer: str = "handoff_offer"
    terms: str = "handoff_terms"
    scope: str = "handoff_scope"
    kickoff_by: str = "handoff_kickoff_by"
    first_milestone: str = "handoff_first_milestone"
    client_tz: str = "handoff_client_tz"  # the client's IANA timezone (e.g. Australia/Sydney)


class Deals(PlaybookModel):
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


class Pause(PlaybookModel):
    within: float = Field(gt=0)
    unit: TimeUnit


class Inbox(PlaybookModel):
    """What the inbox sweep does with what it reads: a client reply pauses the reminders."""

    pause_after_reply: Pause = Pause(within=1, unit=TimeUnit.BUSINESS_DAYS)


class InputLimits(PlaybookModel):
    """How far a time a person types may stray; beyond these it is refused as a typo."""

    future_minutes: Annotated[int, Field(ge=0)] = 5  # a fact recorded ahead of now (skew)
    before_close_days: Annotated[int, Field(ge=0)] = 30  # a fact this long before the close
    close_age_days: Annotated[int, Field(ge=1)] = 365  # a deal recorded as closed this long ago
