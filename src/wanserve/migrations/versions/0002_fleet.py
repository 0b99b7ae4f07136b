"""Routes and the worker registry: the model queue each job waits in, live workers.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("route", sa.String(128)))
    op.execute("UPDATE jobs SET route = model")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("route", existing_type=sa.String(128), nullable=False)
    op.create_index("ix_jobs_route_owner", "jobs", ["status", "route", "owner", "created_at", "id"])
    op.create_index(
        "ix_jobs_owner_route_started",
        "jobs",
        ["owner", "route", "started_at"],
        postgresql_where=sa.text("started_at IS NOT NULL"),
        sqlite_where=sa.text("started_at IS NOT NULL"),
    )
    op.create_index("ix_jobs_route_waiting", "jobs", ["status", "route", "created_at", "id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("engines", sa.JSON, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.create_index("ix_workers_heartbeat_at", "workers", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_jobs_route_waiting", "jobs")
    op.drop_index("ix_jobs_owner_route_started", "jobs")
    op.drop_index("ix_jobs_route_owner", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("route")
