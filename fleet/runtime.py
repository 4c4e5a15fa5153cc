"""Fleet's running parts and their order of start and stop: broker, link, ingest, jobs.

Built by `create_app`; nothing here does I/O until `start()`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from datetime import UTC, datetime

from fleet.config import DEMO_HMAC_KEY_HEX, Settings, split_host_port
from fleet.core.events import Event
from fleet.events.hub import EventHub
from fleet.ingest.embedded_broker import EmbeddedBroker
from fleet.ingest.integration import Integration
from fleet.ingest.mqtt_link import BrokerAddress, Link, MqttLink, parse_mqtt_url
from fleet.ingest.namespaces import NamespaceResolver
from fleet.ingest.partition import Partition
from fleet.ingest.pipeline import IngestPipeline
from fleet.ingest.receiver import ProcessLink
from fleet.integrations.alarm_panel.handler import AlarmPanelHandler
from fleet.integrations.alarm_panel.prepare import WireDecoder
from fleet.integrations.alarm_panel.transport import KIND as ALARM_PANEL
from fleet.integrations.alarm_panel.transport import AlarmPanelTransport
from fleet.jobs.dispatcher import install as install_tasks
from fleet.jobs.retention import RetentionPolicy, apply_retention
from fleet.jobs.scheduler import Job, run_jobs
from fleet.services.commands import CommandService
from fleet.services.liveness import LivenessService, intervals_from
from fleet.stopping import cancel_and_wait
from fleet.store.engine import create_engine
from fleet.store.migrate import upgrade

log = logging.getLogger(__name__)

# How long stop() lets the ingest and the jobs finish what they are doing before cancelling them.
STOP_GRACE_SECONDS = 5.0
# How long the ingest waits, after committing alarms, for the event stream to deliver them.
URGENT_DELIVERY_PATIENCE_SECONDS = 0.025


# The ingest allocates a few small objects per message and keeps a cache per device. With
# CPython's default gen-0 threshold (700) the collector runs every few messages and its older
# generations rescan the whole cache; measured on the ingest micro-benchmark, raising the
# threshold and freezing start-up objects cut the time per message by about a sixth.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc_for_ingest() -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class FleetRuntime:
    def __init__(self, settings: Settings, *, ingest: bool = True) -> None:
        self.settings = settings
        self.ingest_enabled = ingest
        self.engine = create_engine(settings.database_url)
        # The ingest retries a batch whose transaction fails, so a connection PostgreSQL closed
        # (a restart) costs it one attempt: its own small pool skips the pre-ping's three round
        # trips per batch. On SQLite one engine serves all (no ping; one writer at a time).
        self.ingest_engine = (
            self.engine
            if self.engine.dialect.name == "sqlite"
            else create_engine(settings.database_url, pool_size=2, pre_ping=False)
        )
        self.embedded: EmbeddedBroker | None = None
        if settings.mqtt_url == "embedded":
            host, port = split_host_port(settings.mqtt_listen)
            self.embedded = EmbeddedBroker(host, port)
            self.broker = BrokerAddress(host, port)
        else:
            self.broker = parse_mqtt_url(settings.mqtt_url)
        subscriptions = (
            [(topic, settings.mqtt_qos) for topic in settings.alarm_topic_filters] if ingest else []
        )
        # The ingest keeps one client id so its QoS 1 session (and undelivered messages) survive
        # a restart; an API-only process just publishes and gets an id of its own.
        partition = Partition.parse(settings.ingest_partition) if ingest else None
        client_id = settings.mqtt_client_id if ingest else f"fleet-api-{uuid.uuid4().hex[:8]}"
        if partition is not None:
            # Each partition keeps a QoS 1 session of its own; one id for two would make the
            # broker disconnect one worker every time the other connects.
            client_id = f"{client_id}-{partition.index}of{partition.count}"
        persistent = ingest and settings.mqtt_qos > 0
        self.link: Link
        if ingest and settings.ingest_receiver == "process":
            # The receiver process decodes the panels' frames too (see alarm_panel.prepare).
            decoder = WireDecoder(settings.hmac_key, settings.max_payload_bytes, partition)
            self.link = ProcessLink(
                self.broker,
                client_id,
                subscriptions,
                persistent_session=persistent,
                decoder=decoder,
            )
        else:
            self.link = MqttLink(
                self.broker, client_id, subscriptions, persistent_session=persistent
            )
        self.commands = CommandService(
            self.engine,
            {ALARM_PANEL: AlarmPanelTransport(self.link, settings.hmac_key)},
            timeout_seconds=settings.command_timeout_seconds,
        )
        # The event stream (fleet/events): producers call `event_hub.notify()` after committing.
        self.event_hub = EventHub(
            self.engine,
            retention_hours=settings.events_retention_hours,
            client_buffer=settings.events_client_buffer,
        )
        self.pipeline = IngestPipeline(
            self.ingest_engine,
            self.link,
            AlarmPanelHandler(
                periodic_seconds=settings.cdc_periodic_seconds,
                offline_after_seconds=settings.offline_after_seconds,
            ),
            NamespaceResolver(ALARM_PANEL, settings.alarm_topic_base),
            self.commands,
            hmac_key=settings.hmac_key,
            max_payload=settings.max_payload_bytes,
            batch_max=settings.ingest_batch_max,
            batch_wait=settings.ingest_batch_wait_ms / 1000,
            event_sink=self._remember_events,
            urgent_event_sink=self._deliver_events_now,
            partition=partition,
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.jobs: list[Job] = [
            Job("commands", 1.0, self.commands.run_due),
            Job("retention", 3600.0, self._retention),
            Job("events-retention", 600.0, self.event_hub.prune),
        ]
        # Liveness (issue 4): timers in the database, fired each tick; alarm panels' online and
        # offline followed from the event log, and reconciled with device_status now and then.
        self.liveness = LivenessService(
            self.engine, intervals=intervals_from(settings), event_sink=self._remember_events
        )
        self.jobs += [
            Job("liveness-timers", 0.25, self.liveness.fire_due),
            Job("liveness-follow", 0.5, self.liveness.follow_events),
            Job("liveness-reconcile", 60.0, self.liveness.reconcile),
        ]
        # Commands and bulk tasks (issue 3): the meter head-end, and the task dispatcher job.
        self.dispatcher = install_tasks(self)

    def add_integration(self, integration: Integration) -> None:
        """Another device family on the ingest: its topics are subscribed and routed to it."""
        self.pipeline.add_integration(integration)
        if self.ingest_enabled:
            qos = self.settings.mqtt_qos
            self.link.subscriptions.extend((topic, qos) for topic in integration.subscriptions())

    def _remember_events(self, events: list[Event]) -> None:
        # Committed to the event log: the hub reads them from there, here and in other processes.
        self.event_hub.notify()

    async def _deliver_events_now(self, events: list[Event]) -> None:
        await self.event_hub.settle(URGENT_DELIVERY_PATIENCE_SECONDS)

    async def start(self, *, migrate: bool = True) -> None:
        if self.settings.alarm_hmac_key == DEMO_HMAC_KEY_HEX and self.embedded is None:
            log.warning(
                "FLEET_ALARM_HMAC_KEY is the public demo key: anyone can forge panel messages; "
                "set your fleet's key"
            )
        if migrate:
            await asyncio.to_thread(upgrade, self.settings.database_url)
        if self.ingest_enabled:
            tune_gc_for_ingest()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.start)
            log.info("embedded MQTT broker on %s:%d", self.broker.host, self.broker.port)
        await self.event_hub.start()
        await self.link.start()
        if self.ingest_enabled:
            ingest = asyncio.create_task(self.pipeline.run(), name="ingest")
            ingest.add_done_callback(self._ingest_ended)
            self._tasks.append(ingest)
        self._tasks.append(asyncio.create_task(run_jobs(self.jobs, self._stop), name="jobs"))

    async def _retention(self) -> None:
        await apply_retention(self.engine, RetentionPolicy(), datetime.now(UTC))

    def _ingest_ended(self, task: asyncio.Task[None]) -> None:
        if self._stop.is_set() or task.cancelled():
            return
        # Nothing would show it otherwise: the API goes on answering while nothing is ingested.
        log.critical("the ingest stopped: %r; restart Fleet", task.exception())

    async def stop(self) -> None:
        self._stop.set()
        self.pipeline.stop()
        # The ingest and the jobs end by themselves after the batch or job in progress: a task
        # cancelled in the middle of a transaction can leave its connection behind, still
        # holding SQLite's write lock. Whatever has not ended by then is cancelled.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECONDS)
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        self.link.stop()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.close)
        await self.event_hub.stop()
        await self.dispose_engines()

    async def dispose_engines(self) -> None:
        """Close the database connections (the ingest's pool too)."""
        if self.ingest_engine is not self.engine:
            await self.ingest_engine.dispose()
        await self.engine.dispose()
