"""demo onboardings flagged; their mail recorded as suppressed; demo history removable

Revision ID: demo_flag
Revises: inbox_replies

Onboardings loaded by `handoff demo` before this revision are recognised by the seeded message
body every one of them carries; their mail still waiting in the outbox is suppressed. The event
log stays append-only for every real client; only a demo client's events may be deleted (by
`handoff demo --clear`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "demo_flag"
down_revision: str | Sequence[str] | None = "inbox_replies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEEDED_BODY = "Seeded demo history%"  # the body v0.1.0's demo history wrote on every message
STATUSES = "'queued', 'sending', 'sent', 'failed', 'uncertain', 'bounced'"
WITH_SUPPRESSED = f"status IN ({STATUSES}, 'suppressed')"
WITHOUT_SUPPRESSED = f"status IN ({STATUSES})"
DEMO_EVENT = "OLD.onboarding_id IN (SELECT id FROM onboardings WHERE demo)"


def _status_check(condition: str) -> None:
    with op.batch_alter_table("communications") as batch:
        batch.drop_constraint(op.f("ck_communications_status_known"), type_="check")
        batch.create_check_constraint(op.f("ck_communications_status_known"), condition)


def _sqlite_delete_trigger(exempt_demo: bool) -> None:
    op.execute("DROP TRIGGER IF EXISTS events_no_delete")
    when = f" WHEN NOT ({DEMO_EVENT} IS 1)" if exempt_demo else ""
    op.execute(f"CREATE TRIGGER events_no_delete BEFORE DELETE ON events{when} "
               "BEGIN SELECT RAISE(ABORT, 'events is append-only: DELETE refused'); END")


def _postgres_function(exempt_demo: bool) -> None:
    exempt = (f"IF TG_OP = 'DELETE' AND {DEMO_EVENT} THEN RETURN OLD; END IF; "
              if exempt_demo else "")
    op.execute("CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger AS $$ BEGIN "
               f"{exempt}RAISE EXCEPTION 'events is append-only: % refused', TG_OP; END $$ "
               "LANGUAGE plpgsql")


def upgrade() -> None:
    op.add_column("onboardings", sa.Column("demo", sa.Boolean(), nullable=False,
                                           server_default=sa.false()))
    op.create_index(op.f("ix_onboardings_demo"), "onboardings", ["demo"])
    _status_check(WITH_SUPPRESSED)
    op.execute(sa.text(
        "UPDATE onboardings SET demo = true WHERE id IN (SELECT onboarding_id FROM "
        "communications WHERE body_text LIKE :seeded)").bindparams(seeded=SEEDED_BODY))
    op.execute(
        "UPDATE communications SET status = 'suppressed' WHERE status = 'queued' AND "
        "onboarding_id IN (SELECT id FROM onboardings WHERE demo)")
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_delete_trigger(exempt_demo=True)
    else:
        _postgres_function(exempt_demo=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_delete_trigger(exempt_demo=False)
    else:
        _postgres_function(exempt_demo=False)
    op.execute("UPDATE communications SET status = 'queued' WHERE status = 'suppressed'")
    _status_check(WITHOUT_SUPPRESSED)
    op.drop_index(op.f("ix_onboardings_demo"), table_name="onboardings")
    with op.batch_alter_table("onboardings") as batch:
        batch.drop_column("demo")
