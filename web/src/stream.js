// The account's event stream (GET /api/v1/events as Server-Sent Events), resumed by cursor.
//
// The page was rendered at event cursor N (body[data-cursor]); the stream starts right after it,
// so nothing between rendering and connecting is missed. EventSource reconnects by itself with
// Last-Event-ID (which the server prefers to ?cursor=); when the connection fails for good, we
// open a new one from the last cursor seen. Events at or below that cursor are dropped, so a
// replay never applies twice. Where the stream is unavailable, the JSON page of the same route
// is polled instead.

import { signedOut } from "./api.js";

const EVENTS_URL = "/api/v1/events";
const POLL_MS = 2000;
const REFRESH_MS = 5000;
const MAX_BACKOFF_MS = 30000;

export function startStream({ cursor, onEvent, onState }) {
  let last = Number(cursor) || 0;
  let source = null;
  let backoff = 1000;
  let opened = false;

  const deliver = (raw, id) => {
    let event;
    try {
      event = JSON.parse(raw);
    } catch {
      return;
    }
    if (!event || typeof event !== "object") return;
    const position = Number(event.cursor ?? id);
    if (Number.isFinite(position) && position > 0) {
      if (position <= last) return; // already applied
      last = position;
    }
    if (typeof event.type === "string") onEvent(event);
  };

  const connect = () => {
    onState(opened ? "reconnecting" : "connecting");
    source = new EventSource(`${EVENTS_URL}?cursor=${last}`, { withCredentials: true });
    // Events come as plain messages; the server's control messages as named events.
    source.onmessage = (message) => deliver(message.data, message.lastEventId);
    source.addEventListener("reset", (message) => {
      // The cursor was older than the events kept: what happened since is unknown, so every
      // live region re-reads its state; the stream goes on from the cursor given.
      const body = JSON.parse(message.data || "{}");
      if (Number.isFinite(body.cursor)) last = body.cursor;
      onEvent({ type: "*", device_id: null, data: {} });
    });
    // "resume" (this client fell behind) closes the stream: EventSource reconnects by itself
    // with Last-Event-ID, and nothing is lost.
    source.onopen = () => {
      opened = true;
      backoff = 1000;
      onState("live");
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CONNECTING) {
        onState("reconnecting"); // the browser retries by itself
        return;
      }
      // Closed for good: an error status, or the server ended the stream.
      source.close();
      recover();
    };
  };

  const recover = async () => {
    let status = 0;
    try {
      const response = await fetch(`${EVENTS_URL}?cursor=${last}&limit=1`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      status = response.status;
    } catch {
      status = 0; // network down: try the stream again later
    }
    if (status === 401) return signedOut();
    if (status === 404 || status === 405) return poll(); // no stream on this server
    onState("reconnecting");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  };

  // Fallback: the JSON page of the events route, or (without one) a periodic refresh.
  const poll = async () => {
    onState("polling");
    for (;;) {
      try {
        const response = await fetch(`${EVENTS_URL}?cursor=${last}&limit=500`, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        });
        if (response.status === 401) return signedOut();
        let wait = POLL_MS;
        if (response.ok) {
          const body = await response.json();
          for (const item of body.items || []) deliver(JSON.stringify(item), item.cursor);
        } else {
          onEvent({ type: "*", device_id: null, data: {} }); // no event log: refresh everything
          wait = REFRESH_MS;
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
      } catch {
        await new Promise((resolve) => setTimeout(resolve, REFRESH_MS)); // through outages
      }
    }
  };

  connect();
  return { get cursor() { return last; } };
}
