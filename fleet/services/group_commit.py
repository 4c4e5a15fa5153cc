"""Group commit: requests that arrive together share one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Requests that arrive together share one transaction: the first one starts a drain task;
    each request's future resolves after the commit of the batch that holds it, so an answer
    always means "stored"."""

    def __init__(
        self, apply: Callable[[list[T]], Awaitable[list[R | Exception]]], max_batch: int
    ) -> None:
        self._apply = apply
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="report-batches")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # requests parsed in this loop turn join the batch
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                results = await self._apply([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
