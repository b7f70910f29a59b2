// laneway's HTTP API as the page uses it: JSON requests and Server-Sent Events,
// both with the operator's API key in a header. EventSource cannot send a
// header, so streams are read with fetch() and their frames parsed here; the
// key never goes into a URL, where proxies and access logs would keep it.

const KEY_STORAGE = "laneway-api-key";
const RECONNECT_MS = 1000;

// The server refused the key (or there was none and one is needed).
export class KeyNeeded extends Error {}

// An answer other than 2xx, with the server's own message.
export class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  constructor() {
    // Kept for this tab only: sessionStorage is not sent anywhere by itself, as
    // a cookie would be, and it goes when the tab closes.
    this.key = sessionStorage.getItem(KEY_STORAGE);
  }

  setKey(key) {
    this.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
  }

  async fetch(path, { method = "GET", body, headers = {}, signal } = {}) {
    const sent = { ...headers };
    if (this.key) sent["X-Session-API-Key"] = this.key;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
    if (response.status === 401) throw new KeyNeeded("the server asks for an API key");
    if (!response.ok) {
      const answer = await response.json().catch(() => null);
      const message = answer?.error?.message ?? `${response.status} ${response.statusText}`;
      throw new ApiFailure(response.status, message);
    }
    return response;
  }

  async json(path, options) {
    const response = await this.fetch(path, options);
    return response.status === 204 ? null : response.json();
  }

  // Follow a stream until `signal` aborts, reconnecting when it ends or fails
  // (a restart, a network hiccup), with Last-Event-ID so that no stored event
  // is missed or repeated. A 401 or another refusal ends the follow: it throws.
  async follow(path, { signal, onFrame, onState }) {
    let lastEventId = null;
    while (!signal.aborted) {
      try {
        const headers = lastEventId === null ? {} : { "Last-Event-ID": lastEventId };
        const response = await this.fetch(path, { headers, signal });
        onState("live");
        for await (const frame of readFrames(response.body)) {
          if (frame.id !== null) lastEventId = frame.id;
          onFrame(frame);
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof KeyNeeded || error instanceof ApiFailure) throw error;
      }
      onState("reconnecting");
      await sleep(RECONNECT_MS, signal);
    }
  }
}

// The frames of an SSE body as {event, id, data}; comments (keepalives) and
// frames without data are left out.
export async function* readFrames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = parseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (frame !== null) yield frame;
      }
    }
  } finally {
    // Closes the connection too when the reader stops early.
    await reader.cancel().catch(() => {});
  }
}

export function parseFrame(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id") id = value;
  }
  return data.length ? { event, id, data: data.join("\n") } : null;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", wake);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    signal.addEventListener("abort", wake);
  });
}
