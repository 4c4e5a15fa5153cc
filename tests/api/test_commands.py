from datetime import timedelta

import sqlalchemy as sa

from fleet.integrations.alarm_panel.codec import decode_command
from fleet.integrations.alarm_panel.framing import decode_frame
from fleet.services.commands import utcnow
from fleet.store.tables import command_log
from tests.api.conftest import Api

COMMAND_FIELDS = {
    "id",
    "request_id",
    "device_id",
    "sequence",
    "command_type",
    "command_data",
    "auth_level",
    "status",
    "sent_at",
    "acknowledged_at",
    "completed_at",
    "failed_at",
    "response_data",
    "response_code",
    "error_message",
    "retry_count",
    "max_retries",
    "next_retry_at",
    "initiated_by",
    "created_at",
    "updated_at",
}
REBOOT = {"type": "SYSTEM", "payload": {"action": "REBOOT"}}


async def test_send_get_and_list(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    device_id = await api.seed.device(acme, hostname="ESG_ALARM_0483080CEDD8")
    url = f"/api/v1/devices/{device_id}/commands"

    response = await api.client.post(
        url, headers=acme.headers, json={**REBOOT, "initiated_by": "alice"}
    )
    assert response.status_code == 201, response.text
    command = response.json()
    assert set(command) == COMMAND_FIELDS
    assert command["status"] == "SENT" and command["sent_at"].endswith("+00:00")
    assert command["command_type"] == "SYSTEM" and command["device_id"] == device_id
    assert command["command_data"] == {"type": "SYSTEM", "payload": {"action": "REBOOT"}}
    assert command["initiated_by"] == "acme:alice"

    [(topic, frame, _qos)] = api.publisher.published
    assert topic == "ns-acme/pb/d/ESG_ALARM_0483080CEDD8/cmd"
    envelope = decode_command(decode_frame(bytes(32), frame).payload)
    assert envelope["request_id"] == command["request_id"]
    assert envelope["system"]["action"] == "REBOOT"

    second = await api.client.post(url, headers=acme.headers, json=REBOOT)
    assert second.json()["initiated_by"] == "acme:api"
    fetched = await api.client.get(f"/api/v1/commands/{command['id']}", headers=acme.headers)
    assert fetched.status_code == 200 and fetched.json() == command

    listed = await api.walk(url, acme, limit=1)
    assert [c["id"] for c in listed] == [second.json()["id"], command["id"]]


async def test_pending_until_the_broker_takes_it(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    device_id = await api.seed.device(acme)
    api.publisher.refuse = 1  # the broker link is down for the first attempt

    response = await api.client.post(
        f"/api/v1/devices/{device_id}/commands", headers=acme.headers, json=REBOOT
    )
    assert response.status_code == 201, response.text
    pending = response.json()
    assert pending["status"] == "PENDING" and pending["next_retry_at"] is not None
    assert api.publisher.published == []

    later = utcnow() + timedelta(minutes=15)
    api.commands.clock = lambda: later
    await api.commands.run_due()
    sent = (await api.client.get(f"/api/v1/commands/{pending['id']}", headers=acme.headers)).json()
    assert sent["status"] == "SENT" and sent["retry_count"] == 1
    assert len(api.publisher.published) == 1


async def test_rejected_commands(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    device_id = await api.seed.device(acme)
    url = f"/api/v1/devices/{device_id}/commands"
    for body, fragment in (
        ({"type": "SYSTEM", "payload": {"action": "SELF_DESTRUCT"}}, "SELF_DESTRUCT"),
        ({"type": "SYSTEM", "payload": {"colour": "red"}}, "colour"),
        ({"type": "OUTPUT", "payload": {"duration_seconds": "long"}}, "OUTPUT"),
    ):
        response = await api.client.post(url, headers=acme.headers, json=body)
        assert response.status_code == 422, body
        assert fragment in response.json()["detail"]
        [error] = response.json()["errors"]
        assert error["loc"] == ["body", "payload"] and error["type"] == "command_rejected"
    for body in (
        {"type": "REBOOT"},
        {"type": "UNKNOWN"},
        {"payload": {"action": "REBOOT"}},
        {**REBOOT, "urgent": True},
        {**REBOOT, "initiated_by": ""},
        {**REBOOT, "initiated_by": "x" * 51},
        {"type": "SYSTEM", "payload": ["REBOOT"]},
    ):
        response = await api.client.post(url, headers=acme.headers, json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"]
    async with api.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(command_log)) == 0
    assert api.publisher.published == []

    response = await api.client.post(
        "/api/v1/devices/424242/commands", headers=acme.headers, json=REBOOT
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "device 424242 not found"}
    for url in ("/api/v1/commands/424242", "/api/v1/devices/424242/commands"):
        assert (await api.client.get(url, headers=acme.headers)).status_code == 404


async def test_initiated_by_is_truncated_to_the_column(api: Api) -> None:
    acme = await api.seed.tenant("a" * 40)
    device_id = await api.seed.device(acme)
    response = await api.client.post(
        f"/api/v1/devices/{device_id}/commands",
        headers=acme.headers,
        json={**REBOOT, "initiated_by": "b" * 50},
    )
    assert response.status_code == 201
    assert response.json()["initiated_by"] == "a" * 40 + ":" + "b" * 9
