"""client runs waiting to be started (paced starts)

Revision ID: paced_starts
Revises: portal_tables
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "paced_starts"
down_revision: str | Sequence[str] | None = "portal_tables"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_starts",
        sa.Column("onboarding_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["onboarding_id"], ["onboardings.id"],
                                name=op.f("fk_run_starts_onboarding_id_onboardings")),
        sa.PrimaryKeyConstraint("onboarding_id", name=op.f("pk_run_starts")),
    )
    op.create_index(op.f("ix_run_starts_requested_at"), "run_starts", ["requested_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_run_starts_requested_at"), table_name="run_starts")
    op.drop_table("run_starts")
