"""The playbook's `portal` section: link lifetime, stage words for clients, the questionnaire.

Validated at playbook load like everything else (db/playbook/model.py checks the artifact keys a
section records against the stages).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
FieldKind = Literal["text", "long_text", "email", "url", "date", "choice", "multi_choice",
                    "yes_no", "file"]
# File types recognised from their content (tasks/portal/uploads.py), never from the name.
FileType = Literal["pdf", "png", "jpeg", "gif", "webp", "docx", "xlsx", "pptx", "zip"]
DEFAULT_MAX_LENGTH = {"text": 200, "long_text": 4000, "email": 254, "url": 500}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuestionField(_Model):
    """One question: what it asks, how it is answered, whether it is required."""

    key: Key
    label: str = Field(min_length=1, max_length=200)
    kind: FieldKind
    required: bool = False
    help: str | None = None
    choices: list[str] = []
    max_length: int | None = Field(None, ge=1, le=20000)
    accept: list[FileType] = []
    max_files: int = Field(1, ge=1, le=20)

    @model_validator(mode="after")
    def _kind_fits(self) -> QuestionField:
        if self.kind in ("choice", "multi_choice"):
            if len(self.choices) < 2 or len(set(self.choices)) != len(self.choices):
                raise ValueError(f"field {self.key!r} ({self.kind}) needs at least two distinct "
                                 "choices")
        elif self.choices:
            raise ValueError(f"field {self.key!r} is {self.kind}; only choice fields take "
                             "'choices'")
        if self.kind == "file" and not self.accept:
            raise ValueError(f"field {self.key!r} is a file; list the types it accepts "
                             "('accept: [pdf, png]')")
        if self.kind != "file" and (self.accept or self.max_files != 1):
            raise ValueError(f"field {self.key!r} is {self.kind}; 'accept'/'max_files' are for "
                             "file fields")
        return self

    @property
    def limit(self) -> int:
        """The longest answer accepted (text kinds)."""
        return self.max_length or DEFAULT_MAX_LENGTH.get(self.kind, 200)


class QuestionSection(_Model):
    """A group of questions; when complete at submission it records its artifacts."""

    key: Key
    title: str = Field(min_length=1)
    intro: str | None = None
    fields: list[QuestionField] = Field(min_length=1)
    records: list[Key] = []


class Questionnaire(_Model):
    """The intake questionnaire the client fills in through the portal."""

    title: str = Field(min_length=1)
    intro: str | None = None
    records: list[Key] = Field(min_length=1)  # what a submitted questionnaire records
    sections: list[QuestionSection] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_keys(self) -> Questionnaire:
        seen: set[str] = set()
        for section in self.sections:
            for item in section.fields:
                if item.key in seen:
                    raise ValueError(f"questionnaire field key {item.key!r} is used twice")
                seen.add(item.key)
        if len({s.key for s in self.sections}) != len(self.sections):
            raise ValueError("questionnaire section keys must be unique")
        return self

    def field(self, key: str) -> QuestionField | None:
        """The field with this key, if any."""
        for section in self.sections:
            for item in section.fields:
                if item.key == key:
                    return item
        return None

    @property
    def fields(self) -> list[QuestionField]:
        return [f for s in self.sections for f in s.fields]


class StageWords(_Model):
    """How a client reads one stage on the status page."""

    title: str = Field(min_length=1)
    what: str = Field(min_length=1)


class Portal(_Model):
    """The client portal's part of the operating model."""

    link_expires_after_days: int = Field(30, ge=1, le=3650)
    stages: dict[Key, StageWords]
    questionnaire: Questionnaire
