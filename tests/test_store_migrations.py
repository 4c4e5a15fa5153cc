import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.store import accounts as acc
from fleet.store.tables import metadata


async def test_migrations_create_every_table(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert set(metadata.tables) <= names


async def test_account_keys_are_hashed_and_resolve(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        account_id = await acc.create_account(conn, "acme")
        key = await acc.issue_key(conn, account_id)
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT key_hash FROM api_keys"))).scalars().all()
        principal = await acc.resolve_key(conn, key)
        assert await acc.resolve_key(conn, key + "x") is None
    assert key not in stored and acc.hash_key(key) in stored
    assert principal is not None and principal.account_id == account_id
