"""inbound mail: replies, auto-replies and bounces read from the onboarding mailbox

Revision ID: inbox_replies
Revises: deals

Adds the mailbox cursor (UIDVALIDITY + last UID per folder), the inbound message record (one row
per Message-ID), a client response's own Message-ID (unique), an index on the outbox's
Message-IDs (replies are threaded to them) and the outbox status `bounced`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "inbox_replies"
down_revision: str | Sequence[str] | None = "deals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'queued', 'sending', 'sent', 'failed', 'uncertain'"


def upgrade() -> None:
    with op.batch_alter_table("communications") as batch:
        batch.drop_constraint(op.f("ck_communications_status_known"), type_="check")
        batch.create_check_constraint(op.f("ck_communications_status_known"), f"status IN ({STATUSES}, 'bounced')")
        batch.create_index("ix_communications_message_id", ["message_id"])
    with op.batch_alter_table("client_responses") as batch:
        batch.add_column(sa.Column("message_id", sa.String(255), nullable=True))
        batch.create_unique_constraint("uq_client_responses_message_id", ["message_id"])
    op.create_table(
        "mailbox_cursors",
        sa.Column("mailbox", sa.String(400), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", name="pk_mailbox_cursors"),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("mailbox", sa.String(400), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("matched_by", sa.String(20), nullable=False),
        sa.Column("probable", sa.Boolean(), nullable=False),
        sa.Column("onboarding_id", sa.Integer(), nullable=True),
        sa.Column("communication_id", sa.Integer(), nullable=True),
        sa.Column("sender", sa.String(254), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.CheckConstraint("kind IN ('reply', 'auto_reply', 'bounce')",
                           name="ck_inbound_messages_kind_known"),
        sa.CheckConstraint("matched_by IN ('thread', 'reply_to', 'contact')",
                           name="ck_inbound_messages_match_known"),
        sa.ForeignKeyConstraint(["onboarding_id"], ["onboardings.id"],
                                name="fk_inbound_messages_onboarding_id_onboardings"),
        sa.ForeignKeyConstraint(["communication_id"], ["communications.id"],
                                name="fk_inbound_messages_communication_id_communications"),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_messages"),
        sa.UniqueConstraint("message_id", name="uq_inbound_messages_message_id"),
    )
    op.create_index("ix_inbound_messages_onboarding_id", "inbound_messages", ["onboarding_id"])
    op.create_index("ix_inbound_messages_communication_id", "inbound_messages",
                    ["communication_id"])


def downgrade() -> None:
    op.drop_table("inbound_messages")
    op.drop_table("mailbox_cursors")
    with op.batch_alter_table("client_responses") as batch:
        batch.drop_constraint("uq_client_responses_message_id", type_="unique")
        batch.drop_column("message_id")
    with op.batch_alter_table("communications") as batch:
        batch.drop_index("ix_communications_message_id")
        batch.drop_constraint(op.f("ck_communications_status_known"), type_="check")
        batch.create_check_constraint(op.f("ck_communications_status_known"), f"status IN ({STATUSES})")
