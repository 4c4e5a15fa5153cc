// The devices page's filter form: applies as you type or pick, without reloading the page
// (the table re-reads its block, the URL follows so reload and back keep the view).
// Without JavaScript the form's Apply button does the same with a page load.

const TYPE_DELAY_MS = 300;

export function initFilters(live) {
  const form = document.querySelector("form[data-autosubmit]");
  if (!form) return;
  let timer = null;
  const apply = () => {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) params.set(name, value);
    const query = params.toString();
    window.history.replaceState(null, "", `${form.action}${query ? `?${query}` : ""}`);
    live.refreshNamed("table", false);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  form.addEventListener("change", apply);
  form.addEventListener("input", (event) => {
    if (event.target.type !== "search") return;
    clearTimeout(timer);
    timer = setTimeout(apply, TYPE_DELAY_MS);
  });
}
