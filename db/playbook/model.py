"""The playbook as one validated object: cross-section checks, and the lookups used everywhere."""

from __future__ import annotations

from pydantic import Field, model_validator

from db.playbook.catalog import STAGE_MESSAGE_FIELDS, template_needs
from db.playbook.parts import (
    WEEKDAYS,
    BlockerType,
    Business,
    Calendar,
    Deals,
    Escalations,
    Inbox,
    InputLimits,
    Item,
    Key,
    KpiThreshold,
    Lane,
    PacketSection,
    PlaybookModel,
    Sla,
    Stage,
)
from db.playbook.risks import RiskCategory, ScopeUnsettled
from db.questionnaire import Portal
from db.validation import HandoffError

STAGE_ORDER = (
    "close_confirmation",
    "intake_completion",
    "kickoff_alignment",
    "setup_execution",
    "ready_to_deliver",
)


# The SLAs the code reads by key (the cadences and escalations), and the template each times.
CODE_SLAS = {"intake_reminder": "every_min", "kickoff_scheduled": "within",
             "kickoff_recap": "within", "setup_progress_update": "every"}
PACKET = "handoff_packet"  # assembled by the packet step, which records handoff_packet_delivered


class PlaybookError(HandoffError):
    """The playbook file is missing, unreadable or invalid; the message names the bad key."""


class Playbook(PlaybookModel):
    """The whole operating model, checked across sections (lanes, stages, items, portal)."""

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
    risks: dict[Key, RiskCategory] = {}
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

    @model_validator(mode="after")
    def _risk_references(self) -> Playbook:
        for key, risk in self.risks.items():
            self._check_lane(f"risks.{key}.owner_lane", risk.owner_lane)
            if isinstance(risk.trigger, ScopeUnsettled):
                for name in risk.trigger.blockers:
                    if name not in self.blockers:
                        raise ValueError(f"risks.{key}.trigger.blockers: unknown blocker type "
                                         f"{name!r} (blockers: {', '.join(self.blockers)})")
                for name in risk.trigger.decisions:
                    if name not in self.founder_boundaries:
                        raise ValueError(f"risks.{key}.trigger.decisions: unknown founder "
                                         f"boundary {name!r}")
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
    def _messages_and_clocks(self) -> Playbook:
        known = template_needs()
        sent_by: dict[str, str] = {}
        for stage in self.stages:
            for when, names in (("on_enter", stage.on_enter), ("on_exit", stage.on_exit)):
                where = f"stages.{stage.key}.{when}"
                for name in names:
                    if name not in known:
                        raise ValueError(f"{where}: unknown template {name!r} "
                                         "(templates/catalog.yaml lists the templates)")
                    if name == PACKET and when != "on_enter":
                        raise ValueError(f"{where}: {PACKET} is sent on entering a stage, "
                                         "before its handoff_packet_delivered item can exist")
                    if name in sent_by:
                        raise ValueError(f"{where}: template {name!r} is already sent by "
                                         f"{sent_by[name]}; a stage message goes out once")
                    sent_by[name] = where
                    lacking = sorted(known[name].needs - STAGE_MESSAGE_FIELDS)
                    if lacking:
                        raise ValueError(f"{where}: template {name!r} needs "
                                         f"{', '.join(lacking)}, which a stage message cannot "
                                         "give; it is sent by its own rule, not by a stage")
            packet_item = any(i.key == "handoff_packet_delivered"
                              for i in self.required_items(stage.key))
            if packet_item and PACKET not in stage.on_enter:
                raise ValueError(f"stages.{stage.key}.on_enter: must list {PACKET}; the stage "
                                 "requires handoff_packet_delivered, recorded when it is sent")
        for key, sla in self.slas.items():
            if sla.template not in known:
                raise ValueError(f"slas.{key}.template: unknown template {sla.template!r}")
            if sla.from_ is not None:
                self._check_clock(f"slas.{key}.from", sla.from_)
        for key, rhythm in CODE_SLAS.items():
            if key not in self.slas or getattr(self.slas[key], rhythm) is None:
                raise ValueError(f"slas.{key}: required, with '{rhythm}' (the cadences and "
                                 "escalations read it)")
        for key, blocker in self.blockers.items():
            if blocker.template not in known:
                raise ValueError(f"blockers.{key}.template: unknown template "
                                 f"{blocker.template!r}")
        return self

    def _check_clock(self, where: str, start: str) -> None:
        """A message clock starts at the close, a stage's entry, or an artifact's recording."""
        stage = start.removeprefix("stage_entered:")
        if start in ("closed_at", "stage_entered") or (
                start.startswith("stage_entered:") and stage in STAGE_ORDER):
            return
        if start in {i.key for _where, i in self._all_items()}:
            return
        raise ValueError(f"{where}: cannot count from {start!r} (expected closed_at, "
                         "stage_entered, stage_entered:<stage> or an artifact key)")

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

    def sla_for(self, template: str) -> tuple[str, Sla] | None:
        """The SLA that times this template's message, with its key, if any."""
        return next(((k, s) for k, s in self.slas.items() if s.template == template), None)

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
