"""The dashboard in headless Chromium against the real Fleet, Mosquitto and SQLite: sign in, a
simulated panel appearing live, an alarm over MQTT on the open page within two seconds, editing a
device, sending a command, tenancy between two accounts' sessions, signing out, and phone width.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from fleet.sim.alarm_panel import SimulatedPanel
from fleet.store.engine import create_engine
from fleet.store.tables import device_status, devices
from tests.web.conftest import FleetServer, run_async

pytestmark = [pytest.mark.browser, pytest.mark.broker]


def wait_for_device(server: FleetServer, panel: SimulatedPanel, timeout: float = 10.0) -> int:
    """The device's id once the ingest registered the panel (asked through the API)."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {server.acme.key}"}
    while time.monotonic() < deadline:
        found = httpx.get(
            f"{server.url}/api/v1/devices", params={"search": panel.hostname}, headers=headers
        ).json()["items"]
        if found:
            return int(found[0]["id"])
        time.sleep(0.05)
    raise AssertionError(f"{panel.hostname} was not registered in {timeout} s")


def registered_panel(server: FleetServer, seed: int) -> tuple[SimulatedPanel, int]:
    panel = server.panel(seed)
    server.send(panel.login(time.time()))
    return panel, wait_for_device(server, panel)


def mac_of(panel: SimulatedPanel) -> str:
    return ":".join(f"{b:02X}" for b in panel.mac)


def not_reloaded(page: Any) -> None:
    """Mark the page; `still_same_page` then proves no reload happened in between."""
    page.evaluate("window.__fleetTestMarker = 'same page'")


def still_same_page(page: Any) -> None:
    assert page.evaluate("window.__fleetTestMarker") == "same page", "the page was reloaded"


def test_sign_in_and_a_new_panel_appears_without_reload(
    fleet_server: FleetServer, open_browser: Any
) -> None:
    you = open_browser()
    you.goto("/")
    expect(you.page.locator("h1")).to_contain_text("Fleet")
    you.shot("01-sign-in")

    you.page.fill("#key", "fleet_not-a-key")
    you.page.click("button[type=submit]")
    expect(you.page.locator(".alert-danger")).to_contain_text("not valid")

    you.sign_in(fleet_server.acme.key)
    expect(you.page.locator(".account")).to_have_text(fleet_server.acme.name)
    # A new account sees how to connect a panel: the broker and its own topic base.
    connect = you.page.locator(".empty").filter(has_text="Connect your first device")
    expect(connect).to_contain_text(fleet_server.acme.base)
    expect(connect).to_contain_text("fleet simulate")
    expect(you.page.locator('[data-count="devices"]')).to_have_text("0")
    you.wait_live()
    you.shot("02-overview-empty")

    not_reloaded(you.page)
    panel = fleet_server.panel(1)
    fleet_server.send(panel.login(time.time()))
    expect(you.page.locator('[data-count="devices"]')).to_have_text("1")
    expect(you.page.locator(".feed")).to_contain_text(panel.hostname)
    expect(you.page.locator("svg.map .dot")).to_have_count(1)
    still_same_page(you.page)
    you.shot("03-overview-first-panel")

    you.goto("/devices")
    row = you.page.locator("tbody tr").filter(has_text=panel.hostname)
    expect(row).to_contain_text("Reporting")
    you.shot("04-devices")


def test_an_alarm_over_mqtt_shows_on_the_open_pages_within_two_seconds(
    fleet_server: FleetServer, open_browser: Any
) -> None:
    panel, _ = registered_panel(fleet_server, 2)
    you = open_browser()
    you.sign_in(fleet_server.acme.key)
    overview = you.context.new_page()  # a second tab on the overview
    overview.goto(fleet_server.url + "/")
    overview.wait_for_selector('#live[data-state="live"]')
    not_reloaded(overview)
    you.goto("/alarms")
    expect(you.page.locator(".empty")).to_contain_text("No active alarms")
    you.wait_live()
    not_reloaded(you.page)

    started = time.monotonic()
    fleet_server.send(panel.alarm(time.time(), "PANIC1", True))
    alarm = you.page.locator("li.alarm").first
    expect(alarm).to_contain_text("Panic 1", timeout=2000)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"the alarm took {elapsed:.2f} s to show"
    expect(alarm).to_contain_text(panel.hostname)
    expect(alarm).to_have_class("alarm alarm-open prio-row-critical is-new")
    expect(overview.locator('[data-count="alarms"]')).to_have_text("1", timeout=2000)
    still_same_page(you.page)
    you.shot("05-alarm-live")

    alarm.get_by_role("button", name="Acknowledge").click()
    expect(alarm).to_contain_text("acknowledged")
    expect(alarm.get_by_role("button", name="Acknowledge")).to_have_count(0)
    you.page.once("dialog", lambda dialog: dialog.accept())
    alarm.get_by_role("button", name="Resolve").click()
    expect(you.page.locator(".empty")).to_contain_text("No active alarms")
    expect(overview.locator('[data-count="alarms"]')).to_have_text("0", timeout=5000)
    you.goto("/alarms?show=all")
    expect(you.page.locator("li.alarm").first).to_contain_text("resolved")
    still_same_page(overview)


def test_edit_a_devices_details(fleet_server: FleetServer, open_browser: Any) -> None:
    panel, device_id = registered_panel(fleet_server, 3)
    you = open_browser()
    you.sign_in(fleet_server.acme.key)
    you.goto(f"/devices/{device_id}")
    expect(you.page.locator("h1")).to_have_text(panel.hostname)

    you.page.fill("#f-friendly_name", "Lobby panel")
    you.page.fill("#f-location_desc", "Building A, ground floor lobby")
    you.page.fill("#f-installation_date", "2025-03-01")
    you.page.fill("#f-notes", "Installed by Ana; key in the caretaker's office.")
    you.page.get_by_role("button", name="Save details").click()
    expect(you.page.locator(".toast")).to_contain_text("Details saved")
    expect(you.page.locator("h1")).to_have_text("Lobby panel")  # the live summary re-read
    you.shot("06-device-edited")

    you.page.reload()
    expect(you.page.locator("#f-friendly_name")).to_have_value("Lobby panel")
    expect(you.page.locator("#f-installation_date")).to_have_value("2025-03-01")
    headers = {"Authorization": f"Bearer {fleet_server.acme.key}"}
    device = httpx.get(f"{fleet_server.url}/api/v1/devices/{device_id}", headers=headers).json()
    assert device["location_desc"] == "Building A, ground floor lobby"
    assert device["notes"] == "Installed by Ana; key in the caretaker's office."
    assert device["installation_date"].startswith("2025-03-01")
    details = httpx.get(
        f"{fleet_server.url}/api/v1/devices/{device_id}/details", headers=headers
    ).json()
    assert details == {"friendly_name": "Lobby panel"}

    you.goto("/devices?q=lobby")
    expect(you.page.locator("tbody tr")).to_have_count(1)
    expect(you.page.locator("tbody tr")).to_contain_text("Lobby panel")


def test_a_command_button_sends_the_command(fleet_server: FleetServer, open_browser: Any) -> None:
    _, device_id = registered_panel(fleet_server, 4)
    you = open_browser()
    you.sign_in(fleet_server.acme.key)
    you.goto(f"/devices/{device_id}")
    you.page.get_by_role("button", name="Get status").click()
    expect(you.page.locator(".toast")).to_contain_text("Get status: sent")
    row = you.page.locator("[data-live=commands] tbody tr").filter(has_text="GET_STATUS")
    expect(row).to_contain_text("SYSTEM")
    expect(row).to_contain_text("dashboard")
    you.shot("07-command-sent")


async def _seed_device(db_url: str, account_id: int, hostname: str) -> int:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                sa.insert(devices)
                .values(
                    account_id=account_id,
                    kind="alarm_panel",
                    uid="02:00:00:00:00:01",
                    mac_address="02:00:00:00:00:01",
                    hostname=hostname,
                    latitude=-33.45,
                    longitude=-70.66,
                )
                .returning(devices.c.id)
            )
            device_id = int(result.scalar_one())
            await conn.execute(sa.insert(device_status).values(device_id=device_id))
            return device_id
    finally:
        await engine.dispose()


def test_a_second_accounts_session_sees_none_of_the_firsts_devices(
    fleet_server: FleetServer, open_browser: Any
) -> None:
    panel, acme_device = registered_panel(fleet_server, 5)
    other_device = run_async(
        _seed_device, fleet_server.settings.database_url, fleet_server.other.account_id, "OTHER_1"
    )
    acme = open_browser()
    acme.sign_in(fleet_server.acme.key)
    other = open_browser()
    other.sign_in(fleet_server.other.key)
    other.wait_live()

    expect(other.page.locator('[data-count="devices"]')).to_have_text("1")
    other.goto("/devices")
    expect(other.page.locator("tbody tr")).to_have_count(1)
    expect(other.page.locator("tbody")).to_contain_text("OTHER_1")
    expect(other.page.locator("body")).not_to_contain_text(panel.hostname)
    other.shot("08-second-account-devices")

    response = other.goto(f"/devices/{acme_device}")
    assert response is not None and response.status == 404
    for path in (f"/api/v1/devices/{acme_device}", f"/api/v1/devices/{acme_device}/heartbeats"):
        assert other.page.request.get(fleet_server.url + path).status == 404
    listed = other.page.request.get(fleet_server.url + "/api/v1/devices").json()["items"]
    assert [item["id"] for item in listed] == [other_device]
    assert acme.page.request.get(f"{fleet_server.url}/api/v1/devices/{other_device}").status == 404

    # acme's alarm reaches acme's open page, never the other account's.
    other.goto("/alarms")
    other.wait_live()
    acme.goto("/alarms")
    acme.wait_live()
    fleet_server.send(panel.alarm(time.time(), "PANIC2", True))
    expect(acme.page.locator("li.alarm")).to_have_count(1, timeout=2000)
    time.sleep(0.5)
    expect(other.page.locator("li.alarm")).to_have_count(0)
    events = other.page.request.get(fleet_server.url + "/api/v1/events?cursor=0").json()
    assert all(event["device_id"] != acme_device for event in events["items"])


def test_sign_out_ends_the_session(fleet_server: FleetServer, open_browser: Any) -> None:
    you = open_browser()
    you.sign_in(fleet_server.acme.key)
    cookie = next(c for c in you.context.cookies() if c["name"] == "fleet_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain http here; https sets it (FLEET_WEB_COOKIE_SECURE=auto)
    you.page.get_by_role("button", name="Sign out").click()
    expect(you.page.locator("#key")).to_be_visible()
    you.goto("/devices")
    expect(you.page.locator("#key")).to_be_visible()  # back at the sign-in form
    # The old cookie is dead on the server too, not only forgotten by this browser.
    stale = httpx.get(
        f"{fleet_server.url}/api/v1/devices", cookies={"fleet_session": cookie["value"]}
    )
    assert stale.status_code == 401


def test_a_task_for_many_devices_from_the_tasks_page(
    fleet_server: FleetServer, open_browser: Any
) -> None:
    panel, _ = registered_panel(fleet_server, 7)
    you = open_browser()
    you.sign_in(fleet_server.acme.key)
    you.goto("/tasks")
    expect(you.page.locator(".empty")).to_contain_text("No task yet")
    you.wait_live()
    form = you.page.locator("form[data-task-form]")
    form.get_by_role("button", name="Get status").click()
    expect(you.page.locator("#t-type")).to_have_value("SYSTEM")
    you.page.fill("#t-kind", "alarm_panel")
    form.get_by_role("button", name="Preview devices").click()
    expect(form.locator("[data-task-result]")).to_contain_text(f"1 device: {mac_of(panel)}")
    form.get_by_role("button", name="Send to these devices").click()
    expect(you.page.locator(".toast")).to_contain_text("Task accepted for 1 device")
    row = you.page.locator("tbody tr").first
    expect(row).to_contain_text("SYSTEM")
    you.shot("09-task-created")
    row.get_by_role("link", name="SYSTEM").click()
    expect(you.page.locator("tbody")).to_contain_text(mac_of(panel))
    you.shot("10-task")


def test_usable_at_phone_width(fleet_server: FleetServer, open_browser: Any) -> None:
    _, device_id = registered_panel(fleet_server, 6)
    phone = open_browser(width=390, height=844)
    phone.sign_in(fleet_server.acme.key)
    for path, name in (
        ("/", "11-phone-overview"),
        ("/devices", "12-phone-devices"),
        (f"/devices/{device_id}", "13-phone-device"),
        ("/alarms", "14-phone-alarms"),
        ("/tasks", "15-phone-tasks"),
    ):
        phone.goto(path)
        phone.page.wait_for_load_state("networkidle")
        overflow = phone.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at phone width"
        phone.shot(name)
