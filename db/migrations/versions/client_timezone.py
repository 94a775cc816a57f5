"""the client's own timezone on an onboarding (client mail waits for the client's hours)

Revision ID: client_timezone
Revises: risk_register

Onboardings recorded before this revision hold NULL: the business's timezone, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "client_timezone"
down_revision: str | Sequence[str] | None = "risk_register"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("onboardings", sa.Column("client_tz", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("onboardings") as batch:
        batch.drop_column("client_tz")
