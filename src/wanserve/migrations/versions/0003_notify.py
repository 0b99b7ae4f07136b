"""Telling clients: webhook targets and the delivery outbox, a change counter, usage.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("webhooks", sa.JSON, nullable=True))
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.String(16), nullable=False),
        sa.Column("checked", sa.Boolean, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_attempt_at", sa.Float, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["state", "next_attempt_at"])
    op.create_index("ix_webhook_outbox_job", "webhook_outbox", ["job_id"])
    op.create_table(
        "usage",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("size", sa.String(32), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("completed_at", sa.Float, nullable=False),
    )
    op.create_index("ix_usage_owner_day", "usage", ["owner", "day"])
    op.create_index("ix_usage_day", "usage", ["day"])


def downgrade() -> None:
    op.drop_table("usage")
    op.drop_table("webhook_outbox")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("version")
        batch.drop_column("webhooks")
