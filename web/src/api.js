// The same /api/v1 JSON API as any client, signed in by the session cookie. State changes carry
// the CSRF header the server requires of cookie-authenticated requests.

const CSRF_HEADER = document.body.dataset.csrfHeader || "X-Fleet-CSRF";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export function signedOut() {
  // The page itself redirects to the sign-in form, keeping where we were.
  window.location.reload();
}

export async function api(method, url, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers[CSRF_HEADER] = "1";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 401) {
    signedOut();
    throw new ApiError("signed out", 401);
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError((data && data.detail) || `HTTP ${response.status}`, response.status);
  }
  return data;
}

/** Every item of a paged list, following next_cursor up to `maxPages` pages. */
export async function walk(url, params, maxPages = 10) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page++) {
    const query = new URLSearchParams(params);
    if (cursor) query.set("cursor", cursor);
    const body = await api("GET", `${url}?${query}`);
    items.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return items;
}
