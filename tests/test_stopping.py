"""cancel_and_wait: the tasks end, and a cancellation of the caller is never swallowed."""

from __future__ import annotations

import asyncio

import pytest

from fleet.stopping import cancel_and_wait


async def test_cancels_and_waits_for_every_task() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
    await cancel_and_wait(*tasks)
    assert all(task.cancelled() for task in tasks)


async def test_a_task_that_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert "failed while stopping" in caplog.text


async def test_the_callers_own_cancellation_still_reaches_it() -> None:
    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.shield(asyncio.sleep(0.2))  # cleanup that outlives the caller's wait

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await cancel_and_wait(task)
    await asyncio.wait([task])


async def test_a_task_that_will_not_stop_is_left_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    released = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await released.wait()  # a clean-up that waits on something that does not answer

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await cancel_and_wait(task, patience=0.1)
    assert "stubborn has not stopped" in caplog.text
    assert not task.done()
    released.set()
    await asyncio.wait([task])
