"""The risk register's categories: who owns each, how it is mitigated and reviewed, and the rule
that opens it. Triggers are a closed set the code evaluates (tasks/risks/triggers.py); each
carries only its own parameters, so an unknown rule or parameter is refused at load."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from db.playbook.parts import Key, PlaybookModel, TimeUnit


class IntakeIncomplete(PlaybookModel):
    """The client has not sent every intake item this long after entering intake completion."""

    rule: Literal["intake_incomplete"]
    after: float = Field(gt=0)
    unit: TimeUnit = TimeUnit.BUSINESS_DAYS


class KickoffLate(PlaybookModel):
    """No kickoff scheduled within slas.kickoff_scheduled, or the committed window (kickoff_by)
    passed or planned past without a kickoff held."""

    rule: Literal["kickoff_late"]


class ScopeUnsettled(PlaybookModel):
    """An open blocker of these types, or a founder decision under these boundaries."""

    rule: Literal["scope_unsettled"]
    blockers: list[Key] = []
    decisions: list[Key] = []


class QaFailed(PlaybookModel):
    """This many failed QA checks (each one rework)."""

    rule: Literal["qa_failed"]
    failures: int = Field(1, ge=1)


class MessageTrouble(PlaybookModel):
    """A client message in one of these outbox states, or this many follow-up requests."""

    rule: Literal["message_trouble"]
    statuses: list[Literal["bounced", "failed", "uncertain"]] = []
    followups: int | None = Field(None, ge=1)


Trigger = Annotated[IntakeIncomplete | KickoffLate | ScopeUnsettled | QaFailed | MessageTrouble,
                    Field(discriminator="rule")]


class RiskCategory(PlaybookModel):
    """One category of the register: the seed's trigger, owner, mitigation and review frequency."""

    label: str = Field(min_length=1)
    owner_lane: str
    mitigation: str = Field(min_length=1)
    review_every: int = Field(ge=1)  # business days between reviews of an open risk
    trigger: Trigger
