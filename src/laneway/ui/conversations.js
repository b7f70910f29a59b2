// The conversations table: newest first, filtered by status, one row each.
// Every value from the server goes in as text (textContent), never as markup.

export const STATUSES = ["idle", "queued", "running", "paused", "finished", "error", "stuck"];
const PAGE_SIZE = 50;

// A refresh that runs at most once at a time: asked again while running, it
// runs once more after, however often it was asked meanwhile.
export function coalesced(refresh) {
  let running = null;
  let again = false;
  return async function run() {
    if (running !== null) {
      again = true;
      return running;
    }
    try {
      do {
        again = false;
        running = refresh();
        await running;
      } while (again);
    } finally {
      running = null;
    }
  };
}

// Local time of day of a stored RFC 3339 timestamp (microseconds, UTC).
export function clock(timestamp, { millis = false } = {}) {
  const moment = new Date(timestamp.slice(0, 23) + "Z");
  const text = moment.toLocaleTimeString([], { hour12: false });
  return millis ? `${text}.${String(moment.getMilliseconds()).padStart(3, "0")}` : text;
}

export function statusBadge(status) {
  const badge = document.createElement("span");
  badge.textContent = status;
  badge.className = STATUSES.includes(status) ? `status status-${status}` : "status";
  return badge;
}

export function conversationName(conversation) {
  return conversation.title || conversation.id.slice(0, 8);
}

export class ConversationList {
  constructor(api, table, filter, onOpen) {
    this.api = api;
    this.body = table.tBodies[0];
    this.filter = filter;
    this.onOpen = onOpen;
    this.selectedId = null;
    this.refresh = coalesced(() => this.load());
    filter.addEventListener("change", () => this.refresh());
  }

  select(id) {
    this.selectedId = id;
    for (const row of this.body.rows) row.classList.toggle("selected", row.dataset.id === id);
  }

  async load() {
    const query = new URLSearchParams({ limit: PAGE_SIZE });
    if (this.filter.value) query.set("status", this.filter.value);
    const page = await this.api.json(`/api/conversations?${query}`);
    this.body.replaceChildren(...page.items.map((conversation) => this.row(conversation)));
  }

  row(conversation) {
    const row = document.createElement("tr");
    row.dataset.id = conversation.id;
    row.classList.toggle("selected", conversation.id === this.selectedId);
    row.addEventListener("click", () => this.onOpen(conversation.id));
    const cell = (content, className) => {
      const td = document.createElement("td");
      td.append(content);
      if (className) td.className = className;
      row.append(td);
    };
    const usage = conversation.usage;
    cell(clock(conversation.created_at), "time");
    cell(conversationName(conversation), "name");
    cell(conversation.agent.kind, "agent");
    cell(statusBadge(conversation.status));
    cell(conversation.queue_position === null ? "" : String(conversation.queue_position), "num");
    cell(`${conversation.steps_done} / ${conversation.max_steps}`, "num steps");
    cell(`${usage.prompt_tokens} / ${usage.completion_tokens}`, "num tokens");
    return row;
  }
}
