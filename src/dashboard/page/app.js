// The redis-ql dashboard: polls the JSON API under /api/ once a second and
// draws the page. Every text from Redis goes in as a text node (never as
// markup), with characters that could hide or reorder text shown escaped.
"use strict";

const REFRESH_MS = 1000;
const LIST_PAGE = 20;
const TOKEN_KEY = "redis-ql-dashboard-token";

const $ = (id) => document.getElementById(id);

const view = {
  readOnly: true,
  errorsOffset: 0,
  deadOffset: 0,
  // What the lists were drawn from; they are read again when it changes.
  errorsSeen: "",
  deadSeen: "",
  deadTotal: 0,
  listsReadAt: 0,
};

// Control characters, bidirectional controls and invisible characters, as
// the terminal output escapes them.
const HIDING = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u206f\ufeff\ufff9-\ufffb]/g;

function shown(text) {
  return String(text ?? "").replace(HIDING, (c) => "\\u{" + c.codePointAt(0).toString(16) + "}");
}

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(shown(child)));
  }
  return node;
}

function setText(id, text) {
  const node = $(id);
  const value = shown(text);
  if (node.textContent !== value) node.textContent = value;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, options = {}) {
  const headers = {};
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.method === "POST" && token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch (e) {
    answer = null;
  }
  if (!response.ok) {
    const why = answer && answer.error ? answer.error : response.status + " " + response.statusText;
    const error = new Error(why);
    error.status = response.status;
    throw error;
  }
  return answer;
}

function notice(text, kind) {
  const box = $("notice");
  box.textContent = shown(text);
  box.className = kind || "";
  box.hidden = false;
}

function ago(ms) {
  if (ms < 1000) return ms + " ms ago";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s ago";
  return Math.round(ms / 60000) + " min ago";
}

function utc(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "";
}

function showStatus(status) {
  setText("count-generated", status.generated);
  setText("count-processed", status.processed);
  setText("count-errors", status.errors);
  setText("count-dead", status.dead);
  setText("count-queue", status.queue);
  setText("count-in-flight", status.in_flight);

  const g = status.generator;
  $("generator-none").hidden = !!g;
  $("generator-details").hidden = !g;
  if (g) {
    setText("generator-id", g.id);
    setText("generator-host", (g.host || "?") + " / " + (g.pid ?? "?"));
    setText("generator-epoch", g.epoch);
    setText("generator-lease", g.lease_ms_left + " ms");
  }

  const rows = status.copies.map((c) =>
    el("tr", { class: c.alive ? "" : "dead", "data-copy": c.id },
      el("td", { class: "id" }, c.id),
      el("td", {}, c.alive ? c.role : "DEAD"),
      el("td", {}, c.host),
      el("td", { class: "num" }, String(c.pid)),
      el("td", { class: "num" }, ago(c.last_seen_ms_ago)),
      el("td", { class: "num" }, String(c.concurrency)),
      el("td", { class: "num" }, String(c.in_flight)),
      el("td", { class: "num" }, String(c.processed)),
      el("td", { class: "text" }, c.last_error ? c.last_error + " (" + ago(c.last_error_ms_ago) + ")" : "")));
  $("copies").tBodies[0].replaceChildren(...rows);
  const dead = status.copies.filter((c) => !c.alive).length;
  setText("copies-summary", status.copies.length + " registered" + (dead ? ", " + dead + " dead (their messages return to the queue)" : ""));

  const problems = $("problems");
  problems.replaceChildren(...status.problems.map((p) => el("li", {}, "problem: " + p)));
  problems.hidden = status.problems.length === 0;

  // The lists are read again when what they show may have changed, and
  // every ten seconds in any case.
  const errorsSeen = status.errors + "/" + status.errors_total;
  const deadSeen = String(status.dead);
  const stale = Date.now() - view.listsReadAt > 10000;
  if (errorsSeen !== view.errorsSeen || stale) {
    view.errorsSeen = errorsSeen;
    loadErrors();
  }
  if (deadSeen !== view.deadSeen || stale) {
    view.deadSeen = deadSeen;
    loadDead();
  }
  if (stale) view.listsReadAt = Date.now();
}

function niceCeiling(value) {
  if (value <= 1) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function showSeries(series) {
  const points = series.points;
  const svg = $("chart");
  const width = 600;
  const height = 160;
  const last = points[points.length - 1] || { generated: 0, processed: 0, errors: 0 };
  setText("rate-generated", last.generated);
  setText("rate-processed", last.processed);
  setText("rate-errors", last.errors);
  svg.dataset.points = String(points.length);
  const max = niceCeiling(1.15 * Math.max(1, ...points.map((p) => Math.max(p.generated, p.processed, p.errors))));
  setText("chart-max", "top: " + max + "/s");
  setText("chart-span", points.length ? "last " + points.length + " s" : "waiting for the first samples");
  const lines = [];
  for (let y = 0.25; y < 1; y += 0.25) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", "0");
    line.setAttribute("x2", String(width));
    line.setAttribute("y1", String(height * y));
    line.setAttribute("y2", String(height * y));
    line.setAttribute("class", "grid");
    lines.push(line);
  }
  const span = Math.max(points.length - 1, 1);
  for (const name of ["generated", "processed", "errors"]) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const coords = points.map((p, i) => {
      const x = points.length === 1 ? width : (i / span) * width;
      const y = height - (p[name] / max) * (height - 4) - 2;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("class", name);
    lines.push(line);
  }
  svg.replaceChildren(...lines);
}

async function loadErrors() {
  try {
    const page = await api("/api/errors?offset=" + view.errorsOffset + "&limit=" + LIST_PAGE);
    const rows = page.items.map((e) => e && e.raw !== undefined
      ? el("tr", { class: "foreign" }, el("td", {}, ""), el("td", {}, ""), el("td", {}, "(not an error record)"), el("td", { class: "text" }, e.raw))
      : el("tr", { "data-seq": String(e.seq) },
        el("td", { class: "num" }, "#" + e.seq),
        el("td", { class: "when" }, utc(e.detected_at_ms)),
        el("td", { class: "id" }, e.processor),
        el("td", { class: "text" }, e.text)));
    $("errors").tBodies[0].replaceChildren(...rows);
    setText("errors-summary", page.total === 0 ? "none stored" : (page.offset + 1) + "–" + (page.offset + page.items.length) + " of " + page.total + ", newest first");
    $("errors-newer").disabled = view.errorsOffset === 0;
    $("errors-older").disabled = page.offset + page.items.length >= page.total;
  } catch (e) {
    setText("errors-summary", "cannot read: " + e.message);
  }
}

function deadText(record) {
  if (record.raw !== undefined) return "(not a dead-letter record) " + record.raw;
  if (record.seq === undefined) return "(not a message, " + record.bytes + " bytes) " + record.item;
  try {
    return JSON.parse(record.item).text;
  } catch (e) {
    return record.item;
  }
}

async function loadDead() {
  try {
    const page = await api("/api/dead?offset=" + view.deadOffset + "&limit=" + LIST_PAGE);
    view.deadTotal = page.total;
    const rows = page.items.map((d) => {
      const seq = d.seq;
      const requeue = seq === undefined ? "" : el("button", {
        class: "changes small",
        "data-requeue": String(seq),
        onclick: () => act("requeued #" + seq, "/api/dead/requeue", { seqs: [seq] }),
      }, "requeue");
      return el("tr", { "data-seq": seq === undefined ? "" : String(seq) },
        el("td", { class: "num" }, seq === undefined ? "" : "#" + seq),
        el("td", {}, d.reason ?? ""),
        el("td", { class: "text" }, deadText(d)),
        el("td", {}, requeue));
    });
    $("dead").tBodies[0].replaceChildren(...rows);
    setText("dead-summary", page.total === 0 ? "none" : (page.offset + 1) + "–" + (page.offset + page.items.length) + " of " + page.total + ", newest first");
    $("dead-newer").disabled = view.deadOffset === 0;
    $("dead-older").disabled = page.offset + page.items.length >= page.total;
    fitActions();
  } catch (e) {
    setText("dead-summary", "cannot read: " + e.message);
  }
}

function refused(e) {
  if (e.status === 401) return "refused: enter the dashboard's token first (" + e.message + ")";
  if (e.status === 403) return "refused: " + e.message;
  return "failed: " + e.message;
}

async function act(what, path, body) {
  try {
    const answer = await api(path, { method: "POST", body });
    let said = what;
    if (answer.requeued !== undefined) said = "requeued " + answer.requeued + " messages";
    if (answer.not_found && answer.not_found.length) said += "; not in dead-letter: " + answer.not_found.join(", ");
    if (answer.deleted !== undefined) said = "deleted " + answer.deleted + " dead letters";
    notice(said, "ok");
  } catch (e) {
    notice(refused(e), "bad");
  }
  view.deadSeen = "";
  view.errorsSeen = "";
  tick();
}

// Take and download: the errors stay held in Redis until the file is
// handed to the browser, then they are settled (forgotten); if anything
// fails first they are given back. Nothing lost, nothing twice.
async function takeErrors() {
  const limit = Math.max(1, Math.min(10000, Number($("take-limit").value) || 1000));
  let taken;
  try {
    taken = await api("/api/errors/take?limit=" + limit, { method: "POST" });
  } catch (e) {
    notice(refused(e), "bad");
    return;
  }
  if (taken.taken === 0) {
    notice("no errors to take", "ok");
    return;
  }
  try {
    const file = new Blob([taken.ndjson], { type: "application/x-ndjson" });
    const link = el("a", { href: URL.createObjectURL(file), download: "redis-ql-errors-" + new Date().toISOString().replace(/[:.]/g, "-") + ".ndjson" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } catch (e) {
    await api("/api/errors/give-back", { method: "POST", body: { run: taken.run } }).catch(() => {});
    notice("could not save the file (" + e.message + "); the errors went back", "bad");
    return;
  }
  try {
    await api("/api/errors/settle", { method: "POST", body: { run: taken.run, taken: taken.taken } });
    notice("took " + taken.taken + " errors; saved as a file (one get-errors --json line each)", "ok");
  } catch (e) {
    notice("the file is saved but " + e.message, "bad");
  }
  view.errorsSeen = "";
  tick();
}

function fitActions() {
  for (const button of document.querySelectorAll("button.changes")) {
    button.disabled = view.readOnly;
    button.title = view.readOnly ? "read-only: the dashboard was started without --token" : "";
  }
}

async function tick() {
  try {
    const [status, series] = await Promise.all([api("/api/status"), api("/api/series")]);
    setText("connection", "live");
    $("connection").className = "badge ok";
    showStatus(status);
    showSeries(series);
  } catch (e) {
    setText("connection", e.message);
    $("connection").className = "badge bad";
  }
}

async function start() {
  try {
    const info = await api("/api/info");
    view.readOnly = info.read_only;
    setText("where", info.namespace + " @ " + info.redis + " · v" + info.version);
  } catch (e) {
    notice("cannot reach the dashboard: " + e.message, "bad");
  }
  $("read-only").hidden = !view.readOnly;
  $("token-form").hidden = view.readOnly;
  $("token").value = token();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    notice($("token").value ? "token set for this tab" : "token cleared", "ok");
  });
  $("take-errors").addEventListener("click", takeErrors);
  $("requeue-all").addEventListener("click", () => act("requeued", "/api/dead/requeue", { all: true }));
  $("purge-dead").addEventListener("click", () => {
    const count = view.deadTotal;
    if (count === 0) return notice("the dead-letter list is empty", "ok");
    if (window.confirm("Delete the " + count + " oldest dead letters? Any that arrive meanwhile are kept.")) {
      act("purged", "/api/dead/purge", { count });
    }
  });
  const page = (list, delta) => () => {
    view[list + "Offset"] = Math.max(0, view[list + "Offset"] + delta);
    (list === "errors" ? loadErrors : loadDead)();
  };
  $("errors-newer").addEventListener("click", page("errors", -LIST_PAGE));
  $("errors-older").addEventListener("click", page("errors", LIST_PAGE));
  $("dead-newer").addEventListener("click", page("dead", -LIST_PAGE));
  $("dead-older").addEventListener("click", page("dead", LIST_PAGE));
  fitActions();
  await tick();
  setInterval(tick, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
