"""client portal: link state, intake answers and submission, uploads

Revision ID: portal_tables
Revises: demo_flag
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "portal_tables"
down_revision: str | Sequence[str] | None = "demo_flag"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Four new tables; existing onboardings need no row (their link is version 1)."""
    op.create_table(
        "portal_links",
        sa.Column("onboarding_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("issued_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("last_opened_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["onboarding_id"], ["onboardings.id"],
                                name=op.f("fk_portal_links_onboarding_id_onboardings")),
        sa.PrimaryKeyConstraint("onboarding_id", name=op.f("pk_portal_links")),
    )
    op.create_table(
        "intake_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("onboarding_id", sa.Integer(), nullable=False),
        sa.Column("field_key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("saved_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["onboarding_id"], ["onboardings.id"],
                                name=op.f("fk_intake_answers_onboarding_id_onboardings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_answers")),
        sa.UniqueConstraint("onboarding_id", "field_key", name="one_per_field"),
    )
    op.create_index(op.f("ix_intake_answers_onboarding_id"), "intake_answers",
                    ["onboarding_id"])
    op.create_table(
        "intake_submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("onboarding_id", sa.Integer(), nullable=False),
        sa.Column("submitted_at", TZ, nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["onboarding_id"], ["onboardings.id"],
                                name=op.f("fk_intake_submissions_onboarding_id_onboardings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_submissions")),
        sa.UniqueConstraint("onboarding_id", name=op.f("uq_intake_submissions_onboarding_id")),
    )
    op.create_table(
        "portal_uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("onboarding_id", sa.Integer(), nullable=False),
        sa.Column("field_key", sa.String(length=64), nullable=False),
        sa.Column("original_name", sa.String(length=200), nullable=False),
        sa.Column("stored_name", sa.String(length=80), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("uploaded_at", TZ, nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["onboarding_id"], ["onboardings.id"],
                                name=op.f("fk_portal_uploads_onboarding_id_onboardings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_uploads")),
        sa.UniqueConstraint("stored_name", name=op.f("uq_portal_uploads_stored_name")),
    )
    op.create_index(op.f("ix_portal_uploads_onboarding_id"), "portal_uploads",
                    ["onboarding_id"])


def downgrade() -> None:
    """Drop the portal's tables (uploaded files on disk are left alone)."""
    for table in ("portal_uploads", "intake_submissions", "intake_answers", "portal_links"):
        op.drop_table(table)
