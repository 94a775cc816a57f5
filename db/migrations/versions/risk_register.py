"""the risk register: a risk's lane, reviews and close note; one open risk per client and category

Revision ID: risk_register
Revises: paced_starts

No release wrote a risk before this revision (nothing did), so the new columns are empty on
every old row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "risk_register"
down_revision: str | Sequence[str] | None = "stage_items"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("closed_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("risks") as batch:
        batch.add_column(sa.Column("lane", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("opened_by", sa.String(length=254), nullable=True))
        batch.add_column(sa.Column("next_review_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("close_note", sa.Text(), nullable=True))
    op.create_index(op.f("ix_risks_next_review_at"), "risks", ["next_review_at"])
    op.create_index("uq_risks_open_category", "risks", ["onboarding_id", "category"],
                    unique=True, sqlite_where=OPEN, postgresql_where=OPEN)


def downgrade() -> None:
    op.drop_index("uq_risks_open_category", table_name="risks")
    op.drop_index(op.f("ix_risks_next_review_at"), table_name="risks")
    with op.batch_alter_table("risks") as batch:
        for column in ("close_note", "reviewed_at", "next_review_at", "opened_by", "lane"):
            batch.drop_column(column)
