// <time data-relative datetime="…">: "12 s ago" in the text, the local time in the tooltip.

const formatter = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const short = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

export function relative(date, now = Date.now()) {
  const seconds = Math.round((now - date.getTime()) / 1000);
  if (seconds < -5) return short.format(date);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return short.format(date);
}

export function renderTimes(root = document) {
  for (const el of root.querySelectorAll("time[data-relative]")) {
    const date = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) continue;
    el.textContent = relative(date);
    el.title = formatter.format(date);
  }
}

export function initTimes() {
  renderTimes(document);
  setInterval(() => renderTimes(document), 15000);
}
