"""won deals linked to onboardings, and the CRM poll's cursors

Revision ID: deals
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "deals"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deal_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("onboarding_id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("via", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(["onboarding_id"], ["onboardings.id"],
                                name=op.f("fk_deal_links_onboarding_id_onboardings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deal_links")),
        sa.UniqueConstraint("source", "external_id", name="one_per_deal"),
    )
    op.create_index(op.f("ix_deal_links_onboarding_id"), "deal_links", ["onboarding_id"])
    op.create_table(
        "deal_cursors",
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("cursor", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_deal_cursors")),
    )


def downgrade() -> None:
    op.drop_table("deal_cursors")
    op.drop_index(op.f("ix_deal_links_onboarding_id"), table_name="deal_links")
    op.drop_table("deal_links")
