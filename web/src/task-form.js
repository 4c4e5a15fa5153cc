// The tasks page's form: one command for many devices (POST /api/v1/tasks), with a dry run
// that lists the devices it would reach before anything is sent.

import { api } from "./api.js";
import { toast } from "./toast.js";

function request(form, dryRun) {
  const data = new FormData(form);
  let params = {};
  const text = String(data.get("commandParams") || "").trim();
  if (text) {
    try {
      params = JSON.parse(text);
    } catch {
      throw new Error("Parameters must be JSON, for example {\"action\": \"REBOOT\"}");
    }
  }
  const filter = {};
  for (const name of ["kind", "firmwareVersion", "tag"]) {
    const value = String(data.get(name) || "").trim();
    if (value) filter[name] = value;
  }
  const zone = String(data.get("zone") || "").trim();
  if (zone) filter.zone = Number(zone);
  const online = data.get("online");
  if (online) filter.online = online === "true";
  return {
    commandType: String(data.get("commandType") || "").trim(),
    commandParams: params,
    filter,
    requestedBy: "dashboard",
    dryRun,
  };
}

export function initTaskForm(live) {
  const form = document.querySelector("form[data-task-form]");
  if (!form) return;
  const result = form.querySelector("[data-task-result]");
  const say = (text) => { result.textContent = text; };

  form.addEventListener("click", (event) => {
    const preset = event.target.closest("button[data-preset]");
    if (!preset) return;
    const { type, params } = JSON.parse(preset.dataset.preset);
    form.elements.commandType.value = type;
    form.elements.commandParams.value = JSON.stringify(params);
  });

  form.querySelector("[data-task-preview]").addEventListener("click", async () => {
    try {
      const plan = await api("POST", "/api/v1/tasks", request(form, true));
      const names = plan.devices.slice(0, 8).map((d) => d.deviceId).join(", ");
      say(plan.count
        ? `${plan.count} device${plan.count === 1 ? "" : "s"}: ${names}${plan.count > 8 ? ", …" : ""}`
        : "No device matches these filters.");
    } catch (error) {
      say(error.message);
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const accepted = await api("POST", "/api/v1/tasks", request(form, false));
      toast(`Task accepted for ${accepted.devices} device${accepted.devices === 1 ? "" : "s"}`);
      say("");
      live.refreshNamed("list");
    } catch (error) {
      say(error.message);
    } finally {
      button.disabled = false;
    }
  });
}
