"""Decoding the head-end's answers. Pure: bytes in, a frozen value or a reason out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fleet.core.ledger import Answer

MAX_RESPONSE_BYTES = 64 * 1024
_ANSWERS = {
    "SUCCESS": Answer.SUCCESS,
    "FAILED": Answer.FAILURE,
    "ACKNOWLEDGED": Answer.ACK,
    "ACCEPTED": Answer.ACK,
}
_INT32 = 2**31


@dataclass(frozen=True, slots=True)
class HesResponse:
    command_id: str
    device_id: str
    answer: Answer
    code: int
    message: str
    data: dict[str, Any]  # receivedAt, taskId and responsePayload, kept as received


class BadResponse(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _has_nul(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def decode_response(payload: bytes, topic_meter: str) -> HesResponse:
    if len(payload) > MAX_RESPONSE_BYTES:
        raise BadResponse("too_large", f"{len(payload)} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise BadResponse("bad_json", str(exc)[:100]) from exc
    if not isinstance(body, dict):
        raise BadResponse("bad_json", "not a JSON object")
    if _has_nul(body):
        raise BadResponse("bad_json", "NUL character in text")
    command_id = body.get("commandId")
    if not isinstance(command_id, str) or not command_id:
        raise BadResponse("missing_field", "commandId")
    device_id = body.get("deviceId", topic_meter)
    if device_id != topic_meter:
        raise BadResponse("device_mismatch", f"deviceId {device_id!r} on {topic_meter!r}'s topic")
    status = body.get("status")
    answer = _ANSWERS.get(status) if isinstance(status, str) else None
    if answer is None:
        raise BadResponse("bad_status", f"status {status!r}")
    details = body.get("responsePayload")
    if details is not None and not isinstance(details, dict):
        raise BadResponse("bad_json", "responsePayload is not an object")
    details = details or {}
    raw_code = details.get("dlmsResultCode")
    code = (
        raw_code
        if isinstance(raw_code, int)
        and not isinstance(raw_code, bool)
        and -_INT32 < raw_code < _INT32
        else 0
    )
    message = ""
    if answer is Answer.FAILURE:
        error = details.get("error") or details.get("message")
        message = str(error)[:500] if error else f"head-end reported FAILED (DLMS result {code})"
    data = {
        "receivedAt": body.get("receivedAt"),
        "taskId": body.get("taskId"),
        "responsePayload": details,
    }
    return HesResponse(command_id, topic_meter, answer, code, message, data)
