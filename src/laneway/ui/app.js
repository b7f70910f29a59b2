// The operator page: lanes, conversations and one conversation, live.
//
// The lanes stream (GET /api/lanes/stream) sends a snapshot a second; each one
// also refreshes the conversation list, which has no stream of its own, so the
// page makes no request on a timer of its own. The open conversation follows
// its event stream. Every request carries the API key the operator gave, if
// the server asks for one.

import { Api, KeyNeeded } from "./api.js";
import { ConversationPane } from "./conversation.js";
import { ConversationList } from "./conversations.js";
import { LanesTable } from "./lanes.js";

const api = new Api();
const connection = document.getElementById("connection");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyProblem = document.getElementById("key-problem");

const lanes = new LanesTable(document.getElementById("lanes"), document.getElementById("lanes-mode"));
const pane = new ConversationPane(api, askForKey, () => list.refresh().catch(failed));
const list = new ConversationList(
  api,
  document.getElementById("conversations"),
  document.getElementById("status-filter"),
  (id) => {
    list.select(id);
    pane.open(id);
  },
);
// Aborted to stop the lanes stream, when the key has to be asked for again.
let lanesFollowing = null;

function showConnection(state) {
  connection.textContent = state;
  connection.dataset.state = state;
}

function failed(error) {
  if (error instanceof KeyNeeded) askForKey();
  else showConnection(`error: ${error.message}`);
}

function askForKey() {
  lanesFollowing?.abort();
  pane.close();
  showConnection("API key needed");
  keyProblem.textContent = api.key ? "that key was refused" : "";
  keyForm.hidden = false;
  keyInput.focus();
}

function start() {
  lanesFollowing = new AbortController();
  api
    .follow("/api/lanes/stream", {
      signal: lanesFollowing.signal,
      onFrame: (frame) => {
        lanes.update(JSON.parse(frame.data));
        list.refresh().catch(failed);
        pane.tick();
      },
      onState: showConnection,
    })
    .catch(failed);
  if (pane.id !== null) pane.open(pane.id);
}

keyForm.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  api.setKey(keyInput.value);
  keyInput.value = "";
  keyForm.hidden = true;
  showConnection("connecting");
  start();
});

start();
