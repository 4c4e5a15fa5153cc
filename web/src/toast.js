// Short messages at the bottom of the screen: what a button did, or why it failed.

export function toast(message, tone = "ok", ms = 3500) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = document.createElement("div");
  item.className = `toast toast-${tone}`;
  item.textContent = message;
  box.append(item);
  setTimeout(() => item.classList.add("toast-out"), ms);
  setTimeout(() => item.remove(), ms + 400);
}
