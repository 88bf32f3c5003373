// The lro_async dashboard: plain JavaScript, no framework, no network beyond this server.
//
// It reads the list from the dashboard's own endpoint (dashboard/api/operations: newest
// first, each operation as proto3 JSON with a `progress` number the server computed with
// lro_async.progress_fraction), and reads details and acts through the HTTP/JSON API
// (GET, POST :cancel, DELETE), so every action goes through the server's authorizer.
//
// Live updates come from a "feed": an object with stop() and refresh() that calls
// onList(payload) or onError(message). watchFeed() follows the collection watch (GET
// {parent}/operations:watch, Server-Sent Events) and reloads the view on each event;
// where the server has no such route it falls back to pollingFeed(), every second.
"use strict";

const API = document.querySelector('meta[name="lro-api-prefix"]').content;
const POLL_MS = 1000;
const CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
  "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
  "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

const $ = (id) => document.getElementById(id);
const view = { parent: "", filter: "", pageSize: 50, page: 0, selected: null };
let feed = null;

// -- talking to the server -------------------------------------------------------------

function apiUrl(path) {
  return new URL((API ? API + "/" : "") + path, document.baseURI);
}

function operationPath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

// fetch, then the JSON body; throws an Error carrying the server's message on a refusal.
async function call(method, url, body) {
  const init = { method, headers: { accept: "application/json" } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new Error(`the server did not answer (${error.message})`);
  }
  let json = null;
  try {
    json = await response.json();
  } catch (_) {
    // not JSON: a proxy's page, say
  }
  if (!response.ok) {
    const error = json && json.error;
    const message = error && error.message ? error.message : `HTTP ${response.status}`;
    throw new Error(error && error.status ? `${error.status}: ${message}` : message);
  }
  return json || {};
}

function load() {
  const url = new URL("dashboard/api/operations", document.baseURI);
  url.searchParams.set("parent", view.parent);
  url.searchParams.set("filter", view.filter);
  url.searchParams.set("pageSize", String(view.pageSize));
  url.searchParams.set("page", String(view.page));
  return call("GET", url);
}

// -- feeds -----------------------------------------------------------------------------

function pollingFeed(onList, onError) {
  let stopped = false;
  let timer = null;
  let running = false;
  async function tick() {
    clearTimeout(timer);
    if (running) return;
    running = true;
    try {
      const payload = await load();
      if (!stopped) onList(payload);
    } catch (error) {
      if (!stopped) onError(error.message);
    } finally {
      running = false;
      if (!stopped) timer = setTimeout(tick, POLL_MS);
    }
  }
  tick();
  return {
    label: `polling every ${POLL_MS / 1000} s`,
    stop() { stopped = true; clearTimeout(timer); },
    refresh: tick,
  };
}

// The collection watch over SSE (GET {parent}/operations:watch, proto3 JSON events), for a
// server that serves it: each event means "something in this collection changed", so the
// page reloads its view (one load at a time; a burst of events costs one or two loads).
// If the stream cannot be opened or closes for good, the page falls back to polling.
function watchCollection(parent) {
  if (parent === "" || parent === "-") return "-/operations:watch";
  if (parent === "operations") return "operations:watch";
  return `${operationPath(parent.replace(/\/operations$/, ""))}/operations:watch`;
}

function watchFeed(onList, onError) {
  const url = apiUrl(watchCollection(view.parent));
  if (view.filter) url.searchParams.set("filter", view.filter);
  url.searchParams.set("metadataChanges", "true");
  const source = new EventSource(url);
  let feedLabel = "live (watch)";
  let fallback = null;
  let loading = false;
  let again = false;
  async function refresh() {
    if (fallback) return fallback.refresh();
    if (loading) { again = true; return; }
    loading = true;
    try {
      do {
        again = false;
        onList(await load());
      } while (again);
    } catch (error) {
      onError(error.message);
    } finally {
      loading = false;
    }
  }
  source.onopen = () => { watchServed = true; refresh(); };
  source.onmessage = refresh;
  source.addEventListener("error", (event) => {
    if (event.data) {  // the server's "event: error": its data is Google's JSON error body
      try {
        onError(JSON.parse(event.data).error.message);
      } catch (_) {
        onError("the watch stream failed");
      }
    }
    if (source.readyState === EventSource.CLOSED && !fallback) {
      source.close();
      // Polling that works where the watch did not: this server has no watch route.
      fallback = pollingFeed((payload) => { watchServed = false; onList(payload); }, onError);
      feedLabel = fallback.label;
    }
  });
  return {
    get label() { return feedLabel; },
    stop() { source.close(); if (fallback) fallback.stop(); },
    refresh,
  };
}

// The watch where the server serves it, else polling; learnt once per page load (a bad
// filter also fails the stream, so only a list that then loads proves the route missing).
let watchServed = null;
function FEED(onList, onError) {
  return watchServed === false ? pollingFeed(onList, onError) : watchFeed(onList, onError);
}

// -- rendering -------------------------------------------------------------------------

function stateOf(operation) {
  if (!operation.done) return ["RUNNING", "running"];
  if (operation.error) {
    const code = CODES[operation.error.code] || String(operation.error.code);
    if (code === "CANCELLED") return ["CANCELLED", "cancelled"];
    return ["FAILED", `failed: ${code}`];
  }
  return ["SUCCEEDED", "succeeded"];
}

function button(text, cls, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = text;
  b.addEventListener("click", action);
  return b;
}

function newRow(name) {
  const tr = document.createElement("tr");
  tr.dataset.name = name;
  const cells = ["name", "state-cell", "progress", "actions"].map((cls) => {
    const td = document.createElement("td");
    td.className = cls;
    tr.appendChild(td);
    return td;
  });
  const link = document.createElement("a");
  link.href = "#";
  link.textContent = name;
  link.addEventListener("click", (event) => { event.preventDefault(); select(name); });
  cells[0].appendChild(link);
  const state = document.createElement("span");
  state.className = "state";
  cells[1].appendChild(state);
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.appendChild(document.createElement("span"));
  const pct = document.createElement("span");
  pct.className = "pct";
  cells[2].append(bar, pct);
  cells[3].append(button("Cancel", "cancel", () => cancel(name)),
    button("Delete", "delete", () => remove(name)));
  return tr;
}

function updateRow(tr, item) {
  const operation = item.operation;
  const [state, label] = stateOf(operation);
  tr.dataset.state = state;
  tr.classList.toggle("selected", view.selected === operation.name);
  const badge = tr.querySelector(".state");
  badge.className = `state ${state}`;
  badge.textContent = label;
  badge.title = operation.error && operation.error.message ? operation.error.message : "";
  let fraction = typeof item.progress === "number" ? item.progress : null;
  if (fraction === null && state === "SUCCEEDED") fraction = 1;
  tr.dataset.progress = fraction === null ? "" : String(fraction);
  tr.querySelector(".bar > span").style.width = `${Math.round((fraction || 0) * 100)}%`;
  tr.querySelector(".pct").textContent = fraction === null ? "–" : `${Math.floor(fraction * 100)}%`;
  tr.querySelector("button.cancel").disabled = Boolean(operation.done);
}

function render(payload) {
  $("list-error").hidden = true;
  $("live").className = "live ok";
  $("live").textContent = feed ? feed.label : "";
  const tbody = $("operations").tBodies[0];
  const rows = new Map([...tbody.rows].map((tr) => [tr.dataset.name, tr]));
  const names = new Set();
  let previous = null;
  for (const item of payload.operations || []) {
    const name = item.operation.name;
    names.add(name);
    const tr = rows.get(name) || newRow(name);
    updateRow(tr, item);
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (tr !== wanted) tbody.insertBefore(tr, wanted);
    previous = tr;
  }
  for (const [name, tr] of rows) if (!names.has(name)) tr.remove();
  const shown = (payload.operations || []).length;
  $("empty").hidden = shown > 0;
  const first = shown ? view.page + 1 : 0;
  let info = `${first}–${view.page + shown} of ${payload.matched}`;
  if (payload.truncated) info += " (more match than the dashboard reads: narrow the filter)";
  $("page-info").textContent = info;
  $("prev").disabled = view.page === 0;
  $("next").disabled = !payload.nextPage;
  view.nextPage = payload.nextPage;
  if (view.selected) showDetail();
}

function listFailed(message) {
  $("live").className = "live down";
  $("live").textContent = "not updating";
  $("list-error").textContent = message;
  $("list-error").hidden = false;
}

function say(text, refused) {
  const box = $("message");
  box.textContent = text;
  box.className = refused ? "message refused" : "message";
  box.hidden = false;
}

// -- the detail view -------------------------------------------------------------------

function select(name) {
  view.selected = name;
  for (const tr of $("operations").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.name === name);
  }
  $("detail").hidden = false;
  $("detail-name").textContent = name;
  showDetail();
}

let detailRequest = 0;
async function showDetail() {
  const name = view.selected;
  const request = ++detailRequest;
  try {
    const operation = await call("GET", apiUrl(operationPath(name)));
    if (request !== detailRequest || name !== view.selected) return;
    const [state, label] = stateOf(operation);
    $("detail-state").className = `state ${state}`;
    $("detail-state").textContent = label;
    $("detail-cancel").disabled = Boolean(operation.done);
    $("detail-error").hidden = true;
    $("detail-json").textContent = JSON.stringify(operation, null, 2);
  } catch (error) {
    if (request !== detailRequest || name !== view.selected) return;
    $("detail-error").textContent = error.message;
    $("detail-error").hidden = false;
  }
}

// -- actions ---------------------------------------------------------------------------

async function cancel(name) {
  try {
    await call("POST", apiUrl(`${operationPath(name)}:cancel`), {});
    say(`Cancel requested: ${name}`, false);
  } catch (error) {
    say(`Cannot cancel ${name}: ${error.message}`, true);
  }
  feed.refresh();
}

async function remove(name) {
  if (!window.confirm(`Delete ${name}? Its result is lost (the work is not cancelled).`)) return;
  try {
    await call("DELETE", apiUrl(operationPath(name)));
    say(`Deleted: ${name}`, false);
    if (view.selected === name) closeDetail();
  } catch (error) {
    say(`Cannot delete ${name}: ${error.message}`, true);
  }
  feed.refresh();
}

function closeDetail() {
  view.selected = null;
  $("detail").hidden = true;
  for (const tr of $("operations").tBodies[0].rows) tr.classList.remove("selected");
}

// -- wiring ----------------------------------------------------------------------------

function restart() {
  if (feed) feed.stop();
  feed = FEED(render, listFailed);
}

$("query").addEventListener("submit", (event) => {
  event.preventDefault();
  view.parent = $("parent").value.trim();
  view.filter = $("filter").value.trim();
  view.pageSize = Number($("page-size").value);
  view.page = 0;
  restart();
});
$("page-size").addEventListener("change", () => $("query").requestSubmit());
$("prev").addEventListener("click", () => {
  view.page = Math.max(0, view.page - view.pageSize);
  restart();
});
$("next").addEventListener("click", () => {
  if (!view.nextPage) return;
  view.page = Number(view.nextPage);
  restart();
});
$("detail-cancel").addEventListener("click", () => view.selected && cancel(view.selected));
$("detail-delete").addEventListener("click", () => view.selected && remove(view.selected));
$("detail-close").addEventListener("click", closeDetail);

restart();
