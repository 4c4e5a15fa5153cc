"""bulk command tasks and the meter head-end (issue 3)

Revision ID: 0003
Revises: 0002

Hand-written (SQLite and PostgreSQL):
- command_log.command_type becomes VARCHAR(32): each transport validates its own command types
  (meters take SET_TOU & co.), so a new transport needs no enum migration;
- command_log gains timeout_seconds, deadline_at and task_id;
- devices gains tags (a JSON list) and a unique index on the uid of meters;
- the tasks and task_devices tables of seed 002.
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fleet.store.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_COMMAND_TYPES = ("UNKNOWN", "SYSTEM", "CONFIG", "OUTPUT", "DIAGNOSTIC", "OTA", "CONFIG_READ")
_CHECK = re.compile(r",\s*CONSTRAINT ck_command_log_command_type_enum CHECK \([^)]*\)\)")


def _time(name: str, **kwargs: object) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, fleet.store.types.UTCDateTime(timezone=True), **kwargs)  # type: ignore[arg-type]


def _rebuild_sqlite_table(table: str, new_sql: str) -> None:
    """SQLite cannot alter a CHECK: rebuild the table from edited SQL, keeping rows and indexes."""
    bind = op.get_bind()
    index_sqls = [
        row[0]
        for row in bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        )
    ]
    temporary = f"{table}__0003"
    op.execute(re.sub(rf'^CREATE TABLE "?{table}"?', f"CREATE TABLE {temporary}", new_sql))
    op.execute(f"INSERT INTO {temporary} SELECT * FROM {table}")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {temporary} RENAME TO {table}")
    for index_sql in index_sqls:
        op.execute(index_sql)


def _command_type_to_varchar() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE command_log ALTER COLUMN command_type TYPE VARCHAR(32) "
            "USING command_type::text"
        )
        op.execute("DROP TYPE IF EXISTS command_type_enum")
        return
    table_sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'command_log'"
    ).scalar_one()
    new_sql = _CHECK.sub("", table_sql)
    new_sql = re.sub(r"command_type VARCHAR\(\d+\)", "command_type VARCHAR(32)", new_sql)
    if new_sql != table_sql:
        _rebuild_sqlite_table("command_log", new_sql)


def _command_type_to_enum() -> None:
    bind = op.get_bind()
    known = ", ".join(f"'{value}'" for value in OLD_COMMAND_TYPES)
    # Types the old enum cannot hold (meter commands) become UNKNOWN.
    op.execute(
        f"UPDATE command_log SET command_type = 'UNKNOWN' WHERE command_type NOT IN ({known})"
    )
    if bind.dialect.name == "postgresql":
        op.execute(f"CREATE TYPE command_type_enum AS ENUM ({known})")
        op.execute(
            "ALTER TABLE command_log ALTER COLUMN command_type TYPE command_type_enum "
            "USING command_type::command_type_enum"
        )
        return
    table_sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'command_log'"
    ).scalar_one()
    if "ck_command_log_command_type_enum" in table_sql:
        return
    new_sql = re.sub(r"command_type VARCHAR\(\d+\)", "command_type VARCHAR(11)", table_sql)
    new_sql = re.sub(
        r"\)\s*$",
        f", \n\tCONSTRAINT ck_command_log_command_type_enum CHECK (command_type IN ({known}))\n)",
        new_sql.rstrip(),
    )
    _rebuild_sqlite_table("command_log", new_sql)


def upgrade() -> None:
    _command_type_to_varchar()
    # ADD COLUMN without a rebuild on both databases (a rebuild of devices would cascade).
    op.add_column("command_log", sa.Column("timeout_seconds", sa.Float(), nullable=True))
    op.add_column("command_log", _time("deadline_at", nullable=True))
    op.add_column("command_log", sa.Column("task_id", sa.String(36), nullable=True))
    op.create_index("ix_command_log_task_id", "command_log", ["task_id"])
    op.create_index("ix_command_log_status_deadline_at", "command_log", ["status", "deadline_at"])

    op.add_column("devices", sa.Column("tags", sa.JSON(), nullable=True))
    op.create_index(
        "uq_devices_meter_uid",
        "devices",
        ["uid"],
        unique=True,
        sqlite_where=sa.text("kind = 'meter'"),
        postgresql_where=sa.text("kind = 'meter'"),
    )

    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("command_type", sa.String(32), nullable=False),
        sa.Column("command_params", sa.JSON(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        _time("scheduled_at", nullable=False),
        sa.Column("status", sa.String(16), server_default="QUEUED", nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(64), nullable=True),
        sa.Column("rate_per_second", sa.Float(), nullable=False),
        sa.Column("abort_failed_percent", sa.Float(), nullable=True),
        sa.Column("abort_min_finished", sa.Integer(), nullable=True),
        sa.Column("max_retries", sa.Integer(), nullable=True),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("parent_task_id", sa.String(36), nullable=True),
        sa.Column("device_count", sa.Integer(), nullable=False),
        _time("paced_until", nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        _time("created_at", server_default=sa.func.now(), nullable=False),
        _time("updated_at", server_default=sa.func.now(), nullable=False),
        _time("started_at", nullable=True),
        _time("finished_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_tasks_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_tasks")),
    )
    op.create_index("ix_tasks_status_scheduled_at", "tasks", ["status", "scheduled_at"])
    op.create_index("ix_tasks_account_id_created_at", "tasks", ["account_id", "created_at"])
    op.create_index(
        "uq_tasks_account_id_correlation_id",
        "tasks",
        ["account_id", "correlation_id"],
        unique=True,
    )

    op.create_table(
        "task_devices",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("device_uid", sa.String(64), nullable=False),
        sa.Column("command_status", sa.String(16), server_default="PENDING", nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        _time("last_updated", server_default=sa.func.now(), nullable=False),
        sa.Column("command_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.task_id"],
            name=op.f("fk_task_devices_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_task_devices_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["command_log.id"],
            name=op.f("fk_task_devices_command_id_command_log"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_devices")),
        sa.UniqueConstraint("task_id", "device_id", name=op.f("uq_task_devices_task_id_device_id")),
    )
    op.create_index(
        "ix_task_devices_task_id_command_status", "task_devices", ["task_id", "command_status"]
    )
    op.create_index("ix_task_devices_device_id", "task_devices", ["device_id"])
    op.create_index("ix_task_devices_command_id", "task_devices", ["command_id"])


def downgrade() -> None:
    op.drop_index("ix_task_devices_command_id", table_name="task_devices")
    op.drop_index("ix_task_devices_device_id", table_name="task_devices")
    op.drop_index("ix_task_devices_task_id_command_status", table_name="task_devices")
    op.drop_table("task_devices")
    op.drop_index("uq_tasks_account_id_correlation_id", table_name="tasks")
    op.drop_index("ix_tasks_account_id_created_at", table_name="tasks")
    op.drop_index("ix_tasks_status_scheduled_at", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index("uq_devices_meter_uid", table_name="devices")
    op.drop_column("devices", "tags")
    op.drop_index("ix_command_log_status_deadline_at", table_name="command_log")
    op.drop_index("ix_command_log_task_id", table_name="command_log")
    op.drop_column("command_log", "task_id")
    op.drop_column("command_log", "deadline_at")
    op.drop_column("command_log", "timeout_seconds")
    _command_type_to_enum()
