"""liveness, reporters and connections (issue 4)

Revision ID: 0004
Revises: 0003

Hand-written (SQLite and PostgreSQL): the liveness, liveness_history, device_details and
liveness_cursors tables, and the alarm type OFFLINE.
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fleet.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_ALARM_TYPE = "OFFLINE"


def _time(name: str, **kwargs: object) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, fleet.store.types.UTCDateTime(timezone=True), **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "liveness",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), server_default="New", nullable=False),
        sa.Column("connection", sa.String(256), nullable=True),
        _time("since", nullable=True),
        sa.Column("period_seconds", sa.Float(), nullable=True),
        _time("last_report_at", nullable=True),
        _time("due_at", nullable=True),
        sa.Column("held", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("last_report", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_liveness_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_liveness_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_liveness")),
    )
    op.create_index(
        "ix_liveness_due_at",
        "liveness",
        ["due_at"],
        sqlite_where=sa.text("due_at IS NOT NULL"),
        postgresql_where=sa.text("due_at IS NOT NULL"),
    )
    op.create_index("ix_liveness_account_connection", "liveness", ["account_id", "connection"])

    op.create_table(
        "liveness_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("previous", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("connection", sa.String(256), nullable=True),
        _time("at", nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_liveness_history_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_liveness_history")),
    )
    op.create_index("ix_liveness_history_device_id", "liveness_history", ["device_id", "id"])

    op.create_table(
        "device_details",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        _time("updated_at", server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_details_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_details")),
    )

    op.create_table(
        "liveness_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_liveness_cursors")),
    )

    _add_alarm_type(NEW_ALARM_TYPE)


def _add_alarm_type(value: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # ADD VALUE cannot run inside a transaction block (before PostgreSQL 12, and a new value
        # cannot be used in the transaction that added it): commit around it.
        with op.get_context().autocommit_block():
            op.execute(f"ALTER TYPE alarm_type_enum ADD VALUE IF NOT EXISTS '{value}'")
        return
    # SQLite keeps the enum as a CHECK constraint in the table's SQL. A CHECK cannot be altered:
    # rebuild the table from its own SQL with the value added to the list (whatever other
    # migrations added before), then recreate its indexes from their own SQL.
    table_sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'alarm_events'"
    ).scalar_one()
    check = re.search(r"alarm_type IN \(([^)]*)\)", table_sql)
    if check is None or f"'{value}'" in check.group(1):
        return
    index_sqls = [
        row[0]
        for row in bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'alarm_events' "
            "AND sql IS NOT NULL"
        )
    ]
    widened = table_sql.replace(check.group(0), f"alarm_type IN ({check.group(1)}, '{value}')")
    new_sql = re.sub(
        r"^CREATE TABLE \"?alarm_events\"?", "CREATE TABLE alarm_events__0004", widened, count=1
    )
    op.execute(new_sql)
    op.execute("INSERT INTO alarm_events__0004 SELECT * FROM alarm_events")
    op.execute("DROP TABLE alarm_events")
    op.execute("ALTER TABLE alarm_events__0004 RENAME TO alarm_events")
    for index_sql in index_sqls:
        op.execute(index_sql)


def downgrade() -> None:
    # PostgreSQL cannot drop an enum value; the value stays, unused (rows using it are deleted).
    op.execute(f"DELETE FROM alarm_events WHERE alarm_type = '{NEW_ALARM_TYPE}'")
    op.drop_table("liveness_cursors")
    op.drop_table("device_details")
    op.drop_index("ix_liveness_history_device_id", table_name="liveness_history")
    op.drop_table("liveness_history")
    op.drop_index("ix_liveness_account_connection", table_name="liveness")
    op.drop_index("ix_liveness_due_at", table_name="liveness")
    op.drop_table("liveness")
