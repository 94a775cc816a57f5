"""what a client's current stage required when it entered it (playbook edits in flight)

Revision ID: stage_items
Revises: paced_starts
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "stage_items"
down_revision: str | Sequence[str] | None = "paced_starts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL on an existing row: its stage holds it to what the playbook in force requires.
    with op.batch_alter_table("onboardings") as batch:
        batch.add_column(sa.Column("stage_items", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("stage_playbook_version", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("onboardings") as batch:
        batch.drop_column("stage_playbook_version")
        batch.drop_column("stage_items")
