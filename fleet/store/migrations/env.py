"""Alembic environment: runs migrations on a sync engine built from the URL Fleet was given."""

from __future__ import annotations

from alembic import context

from fleet.store.engine import create_sync_engine
from fleet.store.tables import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL given to the migrations")

engine = create_sync_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
