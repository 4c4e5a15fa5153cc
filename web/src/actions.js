// Buttons that act through the API: <button data-post="/api/v1/…" data-done="…" data-confirm="…">
// and the device page's command buttons <button data-command='{"type":…,"payload":…}'>.

import { api } from "./api.js";
import { toast } from "./toast.js";

async function run(button, work, live) {
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const message = await work();
    if (message) toast(message, "ok");
    live.refreshAround(button);
  } catch (error) {
    toast(error.message || String(error), "danger", 6000);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

export function initActions(live) {
  document.addEventListener("click", (event) => {
    const post = event.target.closest("button[data-post]");
    if (post) {
      run(post, async () => {
        const body = post.dataset.body ? JSON.parse(post.dataset.body) : undefined;
        await api("POST", post.dataset.post, body);
        return post.dataset.done || "Done";
      }, live);
      return;
    }
    const command = event.target.closest("button[data-command]");
    if (command) {
      run(command, async () => {
        const body = JSON.parse(command.dataset.command);
        const sent = await api("POST", `/api/v1/devices/${command.dataset.device}/commands`, {
          ...body,
          initiated_by: "dashboard",
        });
        live.refreshNamed("commands");
        return `${command.dataset.label || "Command"}: ${sent.status.toLowerCase()}`;
      }, live);
    }
  });
}
