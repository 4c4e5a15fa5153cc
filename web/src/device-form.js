// The device page's details form: PATCH /api/v1/devices/{id} with what people maintain by hand.

import { api } from "./api.js";
import { toast } from "./toast.js";

function valueOf(input) {
  if (input.type === "checkbox") return input.checked;
  const text = input.value.trim();
  if (input.type === "date") return text ? `${text}T00:00:00+00:00` : null;
  return text === "" ? null : text;
}

export function initDeviceForm(live) {
  const form = document.querySelector("form[data-device-form]");
  if (!form) return;
  const deviceId = form.dataset.deviceForm;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    // Each field says which call saves it: the device's own fields (PATCH) or its details (PUT).
    const groups = { device: {}, details: {} };
    for (const input of form.querySelectorAll("[data-target][name]")) {
      groups[input.dataset.target][input.name] = valueOf(input);
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    form.querySelector(".form-error")?.remove();
    try {
      if (Object.keys(groups.device).length) {
        await api("PATCH", `/api/v1/devices/${deviceId}`, groups.device);
      }
      if (Object.keys(groups.details).length) {
        await api("PUT", `/api/v1/devices/${deviceId}/details`, groups.details);
      }
      toast("Details saved", "ok");
      live.refreshNamed("summary");
    } catch (error) {
      const note = document.createElement("p");
      note.className = "alert alert-danger form-error";
      note.setAttribute("role", "alert");
      note.textContent = error.message;
      form.prepend(note);
    } finally {
      button.disabled = false;
    }
  });
}
