"""Which account a message belongs to, from its namespace (for alarm panels: the topic base).

A namespace maps to exactly one account or the message is rejected, never guessed. With a single
account, the default namespace is that account's; the first such message records the mapping, so
it stays that account's when a second account is created later.
"""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store import accounts

# New mappings (`fleet accounts create --alarm-topic-base`) reach a running ingest this quickly,
# while a flood of messages under an unknown base costs at most one query per interval.
REFRESH_SECONDS = 5.0


class NamespaceResolver:
    def __init__(self, kind: str, default_namespace: str) -> None:
        self.kind = kind
        self.default_namespace = default_namespace
        self._map: dict[str, int] = {}
        self._loaded_at = float("-inf")

    def known(self, namespace: str) -> int | None:
        """The account of a namespace already resolved, without asking the database."""
        return self._map.get(namespace)

    async def resolve(self, conn: AsyncConnection, namespace: str) -> int | None:
        account_id = self._map.get(namespace)
        if account_id is not None:
            return account_id
        if time.monotonic() - self._loaded_at < REFRESH_SECONDS:
            return None
        self._map = await accounts.namespace_map(conn, self.kind)
        self._loaded_at = time.monotonic()
        if namespace not in self._map and namespace == self.default_namespace:
            sole = await accounts.sole_account_id(conn)
            if sole is not None:
                await accounts.add_namespace(conn, sole, self.kind, namespace)
                self._map[namespace] = sole
        return self._map.get(namespace)
