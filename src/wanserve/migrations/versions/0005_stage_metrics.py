"""Stage duration histograms, kept in the database so every worker process adds to them.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stage_metrics",
        sa.Column("stage", sa.String(32), primary_key=True),
        sa.Column("le", sa.String(16), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stage_metrics")
