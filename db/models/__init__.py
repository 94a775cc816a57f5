"""The record of truth: SQLAlchemy 2 models. Alembic (db/migrations) owns the schema.

One module per part of the record (base: the declarative base and types; onboarding: one
client's record and the event log; comms: messages out and in; oversight: the founder's and the
review loop's records; intake: won deals and the client portal; runs: worker coordination).
Importing this package imports every model, so `Base.metadata` holds every table: Alembic's
env and `create_all` read it from here, and callers import models from here.
"""

from db.models.base import Base, UTCDateTime, utcnow
from db.models.comms import DELIVERED, ClientResponse, Communication, InboundMessage, MailboxCursor
from db.models.intake import (
    DealCursor,
    DealLink,
    IntakeAnswer,
    IntakeSubmission,
    PortalLink,
    PortalUpload,
)
from db.models.onboarding import (
    Artifact,
    Audit,
    Blocker,
    Event,
    Incident,
    Onboarding,
    Packet,
    QaReview,
)
from db.models.oversight import (
    CorrectiveAction,
    FounderDecision,
    FounderInterruption,
    OwnerAway,
    Risk,
    SlaException,
)
from db.models.runs import Lease, RunStart

__all__ = [
    "DELIVERED", "Artifact", "Audit", "Base", "Blocker", "ClientResponse", "Communication",
    "CorrectiveAction", "DealCursor", "DealLink", "Event", "FounderDecision",
    "FounderInterruption", "InboundMessage", "Incident", "IntakeAnswer", "IntakeSubmission",
    "Lease", "MailboxCursor", "Onboarding", "OwnerAway", "Packet", "PortalLink", "PortalUpload",
    "QaReview", "Risk", "RunStart", "SlaException", "UTCDateTime", "utcnow",
]
