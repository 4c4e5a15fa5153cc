// The device page's temperature and humidity chart (uPlot), from the stored history rows:
// GET /api/v1/devices/{id}/heartbeats. Loaded only on pages that have a chart.

import uPlot from "uplot";
import { walk } from "./api.js";

const REFRESH_MS = 60000; // besides: shortly after any event of this device
const HEIGHT = 260;

function css(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function toColumns(rows) {
  // Rows come newest first; a chart wants oldest first and only rows with a reading.
  const times = [];
  const temperature = [];
  const humidity = [];
  for (const row of rows.slice().reverse()) {
    if (row.temperature == null && row.humidity == null) continue;
    times.push(new Date(row.time).getTime() / 1000);
    temperature.push(row.temperature);
    humidity.push(row.humidity);
  }
  return [times, temperature, humidity];
}

// History rows are kept when a value moves past its deadband: between two rows the value stayed
// close to the first, so the line holds it (a step) rather than sloping between them.
const stepped = uPlot.paths.stepped({ align: 1 });

function options(width) {
  const grid = { stroke: css("--grid", "#e5e7eb"), width: 1 };
  const axis = { stroke: css("--muted", "#6b7280"), grid, ticks: grid };
  return {
    width,
    height: width < 500 ? 200 : HEIGHT,
    cursor: { drag: { x: true, y: false } },
    legend: { live: true },
    scales: {
      // From the first reading (or ten minutes ago, if later) to now: a short history does
      // not stretch over the whole width, a lone reading does not get an axis of years.
      x: {
        time: true,
        range: (u, min) => {
          const now = Date.now() / 1000;
          return [Math.min(min ?? now, now - 600), now];
        },
      },
      t: { auto: true },
      h: { range: [0, 100] },
    },
    series: [
      {},
      {
        label: "Temperature",
        scale: "t",
        stroke: css("--temp", "#e4572e"),
        width: 2,
        value: (u, v) => (v == null ? "—" : `${v.toFixed(1)} °C`),
        spanGaps: true,
        paths: stepped,
      },
      {
        label: "Humidity",
        scale: "h",
        stroke: css("--hum", "#2e86de"),
        width: 2,
        value: (u, v) => (v == null ? "—" : `${v.toFixed(0)} %`),
        spanGaps: true,
        paths: stepped,
      },
    ],
    axes: [
      { ...axis, space: 90 },
      { ...axis, scale: "t", values: (u, ticks) => ticks.map((v) => `${v.toFixed(1)}°`), size: 50 },
      { ...axis, scale: "h", side: 1, grid: { show: false }, values: (u, ticks) => ticks.map((v) => `${v}%`), size: 45 },
    ],
  };
}

class DeviceChart {
  constructor(element) {
    this.element = element;
    this.deviceId = element.dataset.device;
    this.range = 86400;
    this.plot = null;
    this.pending = null;
    this.section = element.closest("section") || document;
    for (const button of this.section.querySelectorAll("button[data-range]")) {
      button.addEventListener("click", () => {
        this.range = Number(button.dataset.range);
        for (const b of this.section.querySelectorAll("button[data-range]")) {
          b.setAttribute("aria-pressed", String(b === button));
        }
        this.load();
      });
    }
    new ResizeObserver(() => this.resize()).observe(element);
    document.addEventListener("fleet:event", (event) => {
      if (String(event.detail.device_id) === this.deviceId) this.soon();
    });
    setInterval(() => this.load(), REFRESH_MS);
    this.load();
  }

  soon() {
    clearTimeout(this.pending);
    this.pending = setTimeout(() => this.load(), 1500);
  }

  note(text) {
    this.plot?.destroy();
    this.plot = null;
    this.element.replaceChildren();
    const p = document.createElement("p");
    p.className = "muted chart-note";
    p.textContent = text;
    this.element.append(p);
  }

  async load() {
    const since = new Date(Date.now() - this.range * 1000).toISOString();
    let rows;
    try {
      rows = await walk(`/api/v1/devices/${this.deviceId}/heartbeats`, { since, limit: "500" }, 10);
    } catch (error) {
      this.note(`History could not be loaded: ${error.message}`);
      return;
    }
    const data = toColumns(rows);
    if (data[0].length === 0) {
      this.note("No temperature or humidity recorded in this range yet. Readings appear as the device sends heartbeats.");
      return;
    }
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    this.element.replaceChildren();
    this.plot = new uPlot(options(this.element.clientWidth || 600), data, this.element);
  }

  resize() {
    if (!this.plot) return;
    const width = this.element.clientWidth;
    if (width && Math.abs(width - this.plot.width) > 2) {
      this.plot.setSize({ width, height: width < 500 ? 200 : HEIGHT });
    }
  }
}

export function initCharts() {
  for (const element of document.querySelectorAll("[data-chart]")) new DeviceChart(element);
}
