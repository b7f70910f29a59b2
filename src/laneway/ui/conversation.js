// One conversation: its events as they arrive (with the text of a step as it
// streams), its status, and the buttons that send a message, pause,
// interrupt and run it. Event text is user input: it only ever goes in as
// text (textContent), never as markup.

import { KeyNeeded } from "./api.js";
import { clock, coalesced, conversationName, statusBadge } from "./conversations.js";

const KINDS = ["message", "tool_call", "tool_result", "status", "error"];
const SOURCES = ["user", "agent", "tool", "system"];
const ACTIVE = ["queued", "running", "stuck"];
// Rows kept on the page; a long conversation's older events are dropped from
// view (the API still has them all).
const MAX_EVENT_ROWS = 500;

export function eventText(event) {
  const data = event.data;
  switch (event.kind) {
    case "message":
      return String(data.text);
    case "status":
      return data.reason ? `${data.status} (${data.reason})` : String(data.status);
    case "error":
      return `${data.type}: ${data.message}`;
    case "tool_call":
      return `${data.name}(${JSON.stringify(data.arguments)})`;
    case "tool_result":
      return `${data.name} → ${JSON.stringify("error" in data ? data.error : data.output)}`;
    default:
      return JSON.stringify(data);
  }
}

export class ConversationPane {
  constructor(api, onKeyNeeded, onChange) {
    this.api = api;
    this.onKeyNeeded = onKeyNeeded;
    this.onChange = onChange;
    this.id = null;
    this.status = null;
    this.following = null;
    this.section = document.getElementById("conversation");
    this.title = document.getElementById("conversation-title");
    this.statusLabel = document.getElementById("conversation-status");
    this.detail = document.getElementById("conversation-detail");
    this.problem = document.getElementById("action-problem");
    this.events = document.getElementById("events");
    // The text streaming for each step, by step, until its message is stored.
    this.streaming = new Map();
    this.refresh = coalesced(() => this.load());
    // What a failed request or stream does: ask for a key, or say what went wrong.
    this.failed = (error) => {
      if (error instanceof KeyNeeded) this.onKeyNeeded();
      else this.problem.textContent = error.message;
    };
    for (const action of ["pause", "interrupt", "run"]) {
      document.getElementById(action).addEventListener("click", () => this.request(`/${action}`));
    }
    const form = document.getElementById("message-form");
    const input = document.getElementById("message-input");
    form.addEventListener("submit", async (submitted) => {
      submitted.preventDefault();
      if (await this.request("/messages", { content: input.value })) input.value = "";
    });
  }

  open(id) {
    this.close();
    this.id = id;
    this.status = null;
    this.section.hidden = false;
    this.events.replaceChildren();
    this.problem.textContent = "";
    this.following = new AbortController();
    const path = `/api/conversations/${encodeURIComponent(id)}/events/stream?deltas=true`;
    this.api
      .follow(path, {
        signal: this.following.signal,
        onFrame: (frame) => this.receive(frame),
        onState: () => {},
      })
      .catch(this.failed);
    this.refresh().catch(this.failed);
  }

  close() {
    this.following?.abort();
    this.following = null;
    this.streaming.clear();
  }

  // What the lanes stream's tick calls: only a run queued or running changes
  // its queue position, steps and tokens without an event to say so.
  tick() {
    if (this.id !== null && ACTIVE.includes(this.status)) this.refresh().catch(this.failed);
  }

  async load() {
    if (this.id === null) return;
    const id = this.id;
    const conversation = await this.api.json(`/api/conversations/${encodeURIComponent(id)}`);
    if (id === this.id) this.show(conversation);
  }

  show(conversation) {
    this.status = conversation.status;
    this.title.textContent = conversationName(conversation);
    this.title.title = conversation.id;
    this.statusLabel.replaceChildren(statusBadge(conversation.status));
    const parts = [
      conversation.agent.kind,
      `steps ${conversation.steps_done} / ${conversation.max_steps}`,
      `tokens ${conversation.usage.prompt_tokens} / ${conversation.usage.completion_tokens}`,
    ];
    if (conversation.queue_position !== null) parts.push(`queue #${conversation.queue_position}`);
    if (conversation.pause_requested) parts.push("pause requested");
    if (conversation.last_error) parts.push(`last error: ${conversation.last_error}`);
    this.detail.textContent = parts.join(" · ");
  }

  receive(frame) {
    const data = JSON.parse(frame.data);
    if (data.conversation_id !== this.id) return;
    if (frame.event === "delta") {
      this.streamed(data);
      return;
    }
    // A step's deltas come before the message that ends it, which has the
    // whole text; a status means no step is streaming any more.
    if (data.kind === "status" || (data.kind === "message" && data.source === "agent")) {
      for (const row of this.streaming.values()) row.remove();
      this.streaming.clear();
    }
    this.append(this.eventRow(data));
    if (data.kind === "status") {
      this.statusLabel.replaceChildren(statusBadge(data.data.status));
      this.onChange();
    }
    this.refresh().catch(this.failed);
  }

  streamed(delta) {
    let row = this.streaming.get(delta.step);
    if (row === undefined) {
      row = this.row("", "", `step ${delta.step}`, "");
      row.classList.add("streaming");
      this.streaming.set(delta.step, row);
      this.append(row);
    }
    row.lastChild.textContent += delta.text;
  }

  eventRow(event) {
    const row = this.row(String(event.seq), clock(event.timestamp, { millis: true }),
      `${event.source} ${event.kind}`, eventText(event));
    row.dataset.seq = event.seq;
    if (KINDS.includes(event.kind)) row.classList.add(`kind-${event.kind}`);
    if (SOURCES.includes(event.source)) row.classList.add(`source-${event.source}`);
    return row;
  }

  row(seq, time, what, text) {
    const row = document.createElement("li");
    row.className = "event";
    for (const [value, className] of [[seq, "seq"], [time, "time"], [what, "what"], [text, "text"]]) {
      const part = document.createElement("span");
      part.className = className;
      part.textContent = value;
      row.append(part);
    }
    return row;
  }

  append(row) {
    const list = this.events;
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.append(row);
    while (list.childElementCount > MAX_EVENT_ROWS) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  // POST to the conversation; true once done, and the reason shown if not.
  async request(suffix, body) {
    this.problem.textContent = "";
    try {
      const path = `/api/conversations/${encodeURIComponent(this.id)}${suffix}`;
      const answer = await this.api.json(path, { method: "POST", body });
      this.show(answer.conversation ?? answer);
      this.onChange();
      return true;
    } catch (error) {
      this.failed(error);
      return false;
    }
  }
}
