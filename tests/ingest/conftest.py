from collections.abc import AsyncIterator

import pytest

from tests.ingest.harness import Stack, start_stack, stop_stack


@pytest.fixture
async def stack(db_url: str, mqtt_server: tuple[str, int], topic_base: str) -> AsyncIterator[Stack]:
    host, port = mqtt_server
    running = await start_stack(db_url, host, port, topic_base)
    yield running
    await stop_stack(running)
