// The dashboard's entry point: live updates from the event stream, buttons, forms, times.

import { initActions } from "./actions.js";
import { initDeviceForm } from "./device-form.js";
import { initFilters } from "./filters.js";
import { initLive } from "./live.js";
import { startStream } from "./stream.js";
import { initTaskForm } from "./task-form.js";
import { initTimes } from "./times.js";

const LABELS = {
  live: "Live",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  polling: "Polling",
  off: "Not live",
};

function showState(state) {
  const indicator = document.getElementById("live");
  if (!indicator) return;
  indicator.dataset.state = state;
  indicator.querySelector(".live-text").textContent = LABELS[state] || state;
}

function main() {
  initTimes();
  if (!document.getElementById("live")) return; // the sign-in page
  const live = initLive();
  initActions(live);
  initFilters(live);
  initDeviceForm(live);
  initTaskForm(live);
  if (document.querySelector("[data-chart]")) {
    import("./chart.js").then((chart) => chart.initCharts());
  }
  window.fleetStream = startStream({
    cursor: document.body.dataset.cursor,
    onEvent: live.onEvent,
    onState: showState,
  });
}

main();
