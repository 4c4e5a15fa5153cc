"""Accounts, their API keys and the ingest namespaces that map messages to them.

Repositories never commit: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store.tables import account_namespaces, accounts, api_keys

KEY_PREFIXES = {"api": "fleet_", "ingest": "fleet_ingest_"}
ALARM_PANEL_NAMESPACE = "alarm_panel"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an API call acts for: resolved from the bearer key, never from the request body."""

    account_id: int
    account_name: str
    key_kind: str


class AccountExists(ValueError):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: str = "api") -> str:
    # 32 random bytes: unguessable, so a plain SHA-256 of it is a safe thing to store.
    return KEY_PREFIXES[kind] + secrets.token_urlsafe(32)


async def create_account(conn: AsyncConnection, name: str) -> int:
    name = name.strip()
    if not name or len(name) > 64:
        raise ValueError("account name must be 1 to 64 characters")
    exists = await conn.scalar(sa.select(accounts.c.id).where(accounts.c.name == name))
    if exists is not None:
        raise AccountExists(f"an account named {name!r} already exists")
    result = await conn.execute(sa.insert(accounts).values(name=name).returning(accounts.c.id))
    return int(result.scalar_one())


async def account_id_by_name(conn: AsyncConnection, name: str) -> int | None:
    value = await conn.scalar(sa.select(accounts.c.id).where(accounts.c.name == name))
    return None if value is None else int(value)


async def list_accounts(conn: AsyncConnection) -> list[dict[str, object]]:
    rows = await conn.execute(sa.select(accounts).order_by(accounts.c.id))
    return [dict(row._mapping) for row in rows]


async def issue_key(
    conn: AsyncConnection, account_id: int, kind: str = "api", label: str | None = None
) -> str:
    """Create a key and return it: the only moment the plain key exists."""
    if kind not in KEY_PREFIXES:
        raise ValueError(f"unknown key kind {kind!r}")
    key = new_key(kind)
    await conn.execute(
        sa.insert(api_keys).values(
            account_id=account_id, key_hash=hash_key(key), kind=kind, label=label
        )
    )
    return key


async def resolve_key(conn: AsyncConnection, key: str) -> Principal | None:
    if not key or len(key) > 200:
        return None
    digest = hash_key(key)
    row = (
        await conn.execute(
            sa.select(api_keys.c.key_hash, api_keys.c.kind, accounts.c.id, accounts.c.name)
            .join(accounts, accounts.c.id == api_keys.c.account_id)
            .where(api_keys.c.key_hash == digest)
        )
    ).first()
    # The index lookup found the row by hash; the constant-time compare keeps the check itself
    # from depending on how much of the hash matched.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return Principal(account_id=int(row.id), account_name=row.name, key_kind=row.kind)


async def add_namespace(conn: AsyncConnection, account_id: int, kind: str, namespace: str) -> None:
    taken = await conn.scalar(
        sa.select(account_namespaces.c.account_id).where(
            account_namespaces.c.kind == kind, account_namespaces.c.namespace == namespace
        )
    )
    if taken is not None and taken != account_id:
        raise ValueError(f"{kind} namespace {namespace!r} already belongs to another account")
    if taken is None:
        await conn.execute(
            sa.insert(account_namespaces).values(
                account_id=account_id, kind=kind, namespace=namespace
            )
        )


async def namespace_map(conn: AsyncConnection, kind: str) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(account_namespaces.c.namespace, account_namespaces.c.account_id).where(
            account_namespaces.c.kind == kind
        )
    )
    return {row.namespace: int(row.account_id) for row in rows}


async def sole_account_id(conn: AsyncConnection) -> int | None:
    """The account's id when exactly one exists: it then owns the default namespaces."""
    ids = (await conn.execute(sa.select(accounts.c.id).limit(2))).scalars().all()
    return int(ids[0]) if len(ids) == 1 else None
