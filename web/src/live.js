// Live regions: <section data-live="name" data-live-on="device. alarm." data-live-device="7">.
// When an event matches, the region re-reads its own server-rendered block
// (`?fragment=name` on the page's URL) and swaps it in: one rendering path, on the server.

import { signedOut } from "./api.js";
import { renderTimes } from "./times.js";

const MIN_INTERVAL_MS = 400; // bursts of events cost one refresh per region

function matches(region, event) {
  const patterns = (region.dataset.liveOn || "*").split(/\s+/).filter(Boolean);
  const typeOk =
    event.type === "*" || patterns.some((p) => p === "*" || event.type === p || (p.endsWith(".") && event.type.startsWith(p)));
  if (!typeOk) return false;
  const device = region.dataset.liveDevice;
  return !device || event.type === "*" || event.device_id == null || String(event.device_id) === device;
}

function keysOf(root) {
  return new Set([...root.querySelectorAll("[data-key]")].map((el) => el.dataset.key));
}

class Region {
  constructor(element) {
    this.element = element;
    this.name = element.dataset.live;
    this.timer = null;
    this.running = false;
    this.again = false;
    this.lastRun = 0;
    this.flash = false;
  }

  // `flash`: mark what arrived (an event brought it), not when the person changed the view.
  schedule(flash = true) {
    this.flash = this.flash || flash;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    const wait = Math.max(0, this.lastRun + MIN_INTERVAL_MS - Date.now());
    this.timer = setTimeout(() => this.refresh(), wait);
  }

  async refresh() {
    this.timer = null;
    this.running = true;
    this.lastRun = Date.now();
    try {
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", this.name);
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.status === 401) return signedOut();
      if (!response.ok) return;
      const html = await response.text();
      const before = keysOf(this.element);
      this.element.innerHTML = html;
      renderTimes(this.element);
      if (this.flash) {
        for (const el of this.element.querySelectorAll("[data-key]")) {
          if (!before.has(el.dataset.key)) el.classList.add("is-new");
        }
      }
      this.flash = false;
      this.element.dispatchEvent(new CustomEvent("fleet:refreshed", { bubbles: true }));
    } catch {
      // a failed refresh is retried by the next event
    } finally {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    }
  }
}

export function initLive() {
  const regions = [...document.querySelectorAll("[data-live]")].map((el) => new Region(el));
  const onEvent = (event) => {
    for (const region of regions) if (matches(region.element, event)) region.schedule();
    document.dispatchEvent(new CustomEvent("fleet:event", { detail: event }));
  };
  const refreshAround = (element) => {
    const region = regions.find((r) => r.element.contains(element) || r.element === element);
    (region ? [region] : regions).forEach((r) => r.schedule());
  };
  const refreshNamed = (name, flash = true) =>
    regions.filter((r) => r.name === name).forEach((r) => r.schedule(flash));
  return { onEvent, refreshAround, refreshNamed, regions };
}
