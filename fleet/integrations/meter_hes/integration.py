"""The head-end's answers on the ingest: correlated by commandId (the ledger's request id) to
command_log, inside the ingest batch's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.events import Event
from fleet.ingest.integration import IntegrationOutcome
from fleet.ingest.mqtt_link import InboundMessage
from fleet.ingest.rejections import Rejection
from fleet.integrations.meter_hes.codec import BadResponse, decode_response
from fleet.integrations.meter_hes.topics import meter_of_response, response_filter
from fleet.services.commands import Response, apply_responses_in

NAME = "meter_hes"


class MeterHesIntegration:
    name = NAME

    def __init__(self, prefix: str = "hes", share_group: str = "") -> None:
        self.prefix = prefix
        self.share_group = share_group

    def subscriptions(self) -> Sequence[str]:
        topic = response_filter(self.prefix)
        return [f"$share/{self.share_group}/{topic}" if self.share_group else topic]

    def matches(self, topic: str) -> bool:
        return meter_of_response(self.prefix, topic) is not None

    async def handle(
        self, conn: AsyncConnection, messages: Sequence[InboundMessage], now: datetime
    ) -> IntegrationOutcome:
        outcome = IntegrationOutcome()
        responses: list[Response] = []
        sources: list[InboundMessage] = []
        for message in messages:
            meter = meter_of_response(self.prefix, message.topic)
            if meter is None:
                continue
            try:
                decoded = decode_response(message.payload, meter)
            except BadResponse as exc:
                outcome.rejected.append(Rejection(exc.reason, message.topic, str(exc)))
                continue
            responses.append(
                Response(
                    decoded.command_id,
                    decoded.answer,
                    decoded.code,
                    decoded.message,
                    decoded.data,
                    device_uid=decoded.device_id,
                )
            )
            sources.append(message)
        results = await apply_responses_in(conn, responses, now) if responses else []
        for result, message in zip(results, sources, strict=True):
            if result.result == "applied":
                assert result.command is not None and result.status is not None
                outcome.applied.append("response")
                command = result.command
                data = {
                    "command_id": command["id"],
                    "request_id": str(command["request_id"]),
                    "status": result.status,
                }
                if command["task_id"]:
                    data["task_id"] = command["task_id"]
                outcome.events.append(
                    Event(command["account_id"], "command.updated", command["device_id"], data)
                )
            elif result.result in ("unknown", "mismatch"):
                reason = "unknown_request" if result.result == "unknown" else "device_mismatch"
                outcome.rejected.append(Rejection(reason, message.topic))
            else:  # recorded on the command and ignored: finished, cancelled, duplicate
                outcome.applied.append("response_ignored")
        return outcome
