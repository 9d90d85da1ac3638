// entrypoint dashboard: cards from /api/v1/services, live changes and log lines from
// /api/v1/events (SSE), a notice for every action's result and every failure.
// Plain JavaScript, no build step, nothing loaded from outside.
"use strict";

const MAX_LOG_LINES = 2000;        // lines kept in the page: the view stays responsive
const REFRESH_MS = 2000;           // CPU, memory and uptime between events
const $ = (id) => document.getElementById(id);
const services = new Map();        // name -> last snapshot
const cards = new Map();           // name -> card element
let logLines = [];                 // {service, text}, at most MAX_LOG_LINES
let pendingLines = [];             // arrived since the last frame
let frameQueued = false;
let source = null;
let role = null;

// -- helpers ---------------------------------------------------------------------------

function duration(s) {
  if (s === null || s === undefined) return "-";
  s = Math.floor(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MB";
  return Math.round(n / 1024) + " KB";
}

const hues = new Map();
function hue(name) {       // a stable colour per service name, as in the terminal
  if (!hues.has(name)) {
    let h = 0;
    for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
    hues.set(name, "hsl(" + h + ", 60%, 68%)");
  }
  return hues.get(name);
}

function notice(kind, title, text, ms) {
  const box = document.createElement("div");
  box.className = "notice " + kind;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  const b = document.createElement("b");
  b.textContent = title;
  box.appendChild(b);
  if (text) box.appendChild(document.createTextNode(text));
  const x = document.createElement("button");
  x.className = "x";
  x.textContent = "\u00d7";
  x.setAttribute("aria-label", "dismiss");
  x.onclick = () => box.remove();
  box.appendChild(x);
  $("notices").appendChild(box);
  while ($("notices").children.length > 6) $("notices").firstChild.remove();
  setTimeout(() => box.remove(), ms || (kind === "error" ? 12000 : 5000));
}

async function api(method, path, body) {
  const options = {method, headers: {}, credentials: "same-origin"};
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
  if (response.status === 401) showLogin();
  return {ok: response.ok, status: response.status, data};
}

// -- cards -----------------------------------------------------------------------------

function card(name) {
  let el = cards.get(name);
  if (el) return el;
  el = $("card-template").content.firstElementChild.cloneNode(true);
  el.dataset.service = name;
  el.querySelector(".name").textContent = name;
  el.querySelectorAll("button[data-action]").forEach((button) => {
    button.onclick = () => button.dataset.action === "logs" ? showLogsOf(name) : act(name, button.dataset.action, button);
  });
  cards.set(name, el);
  $("cards").appendChild(el);
  const option = document.createElement("option");
  option.value = option.textContent = name;
  $("log-service").appendChild(option);
  return el;
}

function render(s) {
  const el = card(s.name);
  el.className = "card s-" + s.state;
  el.querySelector(".state").textContent = s.state;
  const health = el.querySelector(".health");
  health.textContent = s.health || "-";
  health.className = "health " + (s.health || "");
  el.querySelector(".pid").textContent = s.pid === null || s.pid === undefined ? "-" : s.pid;
  el.querySelector(".uptime").textContent = s.pid ? duration(s.uptime) : "-";
  el.querySelector(".restarts").textContent = s.restarts === undefined ? "-" : s.restarts;
  el.querySelector(".cpu").textContent = s.cpu_percent === null || s.cpu_percent === undefined ? "-" : s.cpu_percent.toFixed(1) + "%";
  el.querySelector(".mem").textContent = bytes(s.rss_bytes);
  const status = s.status || s.error || (s.exit && !s.pid ? "last exit: " + (s.exit.text || s.exit) : "");
  el.querySelector(".status-text").textContent = status;
  const progress = el.querySelector(".progress");
  if (s.progress && s.progress.total) {
    const pct = Math.min(100, Math.round(100 * s.progress.done / s.progress.total));
    progress.hidden = false;
    progress.querySelector(".bar").style.width = pct + "%";
    progress.querySelector(".pct").textContent = s.progress.done + " / " + s.progress.total + " (" + pct + "%)";
  } else {
    progress.hidden = true;
  }
  const next = el.querySelector(".next-run");
  next.hidden = !s.next_run;
  if (s.next_run) next.textContent = "next run " + new Date(s.next_run * 1000).toLocaleString();
  const running = ["RUNNING", "STARTING", "PENDING", "STOPPING", "BACKOFF"].includes(s.state);
  el.querySelector('[data-action="start"]').disabled = running || role === "read";
  el.querySelector('[data-action="stop"]').disabled = !running || role === "read";
  el.querySelector('[data-action="restart"]').disabled = role === "read" || s.state === "DISABLED";
  el.querySelector(".name").title = (s.command || []).join(" ");
}

function summarize() {
  const counts = {};
  for (const s of services.values()) counts[s.state] = (counts[s.state] || 0) + 1;
  const box = $("summary");
  box.textContent = "";
  for (const [state, n] of Object.entries(counts)) {
    const span = document.createElement("span");
    const b = document.createElement("b");
    b.textContent = n;
    span.appendChild(b);
    span.appendChild(document.createTextNode(" " + state.toLowerCase()));
    box.appendChild(span);
  }
}

function update(s) {
  const merged = Object.assign({}, services.get(s.name) || {}, s);
  services.set(s.name, merged);
  render(merged);
  summarize();
}

async function refresh() {
  const r = await api("GET", "/api/v1/services");
  if (!r.ok) return;
  const runner = r.data.runner;
  $("runner").textContent = "v" + runner.version + " \u00b7 " + runner.config + " \u00b7 pid " + runner.pid + " \u00b7 up " + duration(runner.uptime);
  for (const s of r.data.services) update(s);
  for (const name of [...cards.keys()]) {
    if (!r.data.services.some((s) => s.name === name)) { cards.get(name).remove(); cards.delete(name); services.delete(name); }
  }
}

// -- actions ---------------------------------------------------------------------------

async function act(name, action, button) {
  if (button) { button.disabled = true; button.classList.add("busy"); }
  try {
    const path = name ? "/api/v1/services/" + encodeURIComponent(name) + "/" + action : "/api/v1/services/" + action;
    const r = await api("POST", path);
    const what = (name || "all services") + ": " + action;
    if (r.ok) {
      const states = (r.data.services || []).map((s) => s.name + " " + s.state + (s.pid ? " (pid " + s.pid + ")" : "")).join(", ");
      notice("ok", what + " done", states || "nothing to do");
    } else if (r.status !== 401) {
      notice("error", what + " failed", r.data.error || ("HTTP " + r.status));
    }
  } catch (e) {
    notice("error", action + " failed", "the web face cannot be reached: " + e.message);
  } finally {
    if (button) { button.classList.remove("busy"); button.disabled = false; }
    refresh();
  }
}

document.querySelectorAll("button[data-all]").forEach((button) => {
  button.onclick = () => act(null, button.dataset.all, button);
});

// -- live events -----------------------------------------------------------------------

function connect() {
  if (source) source.close();
  source = new EventSource("/api/v1/events?logs=*");
  source.onopen = () => { $("live").classList.add("on"); $("live-text").textContent = "live"; };
  source.onerror = () => { $("live").classList.remove("on"); $("live-text").textContent = "reconnecting"; };
  source.addEventListener("snapshot", (e) => {
    for (const ev of JSON.parse(e.data).services) update(fromEvent(ev));
  });
  source.addEventListener("fell_behind", () => notice("warn", "Live view fell behind", "some changes were skipped; states are current again"));
  source.addEventListener("state", (e) => {
    const ev = JSON.parse(e.data);
    const before = services.get(ev.service);
    update(fromEvent(ev));
    if (ev.state === "FAILED" || (ev.state === "BACKOFF" && (!before || before.state !== "BACKOFF"))) {
      notice("error", ev.service + " " + (ev.state === "FAILED" ? "failed" : "crashed"),
             (ev.exit ? ev.exit + "; " : "") + (ev.reason || ev.state));
    } else if (ev.health === "unhealthy" && before && before.health !== "unhealthy") {
      notice("warn", ev.service + " is unhealthy", ev.reason || "");
    }
  });
  source.addEventListener("log", (e) => {
    const data = JSON.parse(e.data);
    for (const text of data.lines) pendingLines.push({service: data.service, text});
    if (pendingLines.length > MAX_LOG_LINES) pendingLines = pendingLines.slice(-MAX_LOG_LINES);
    if (!frameQueued) { frameQueued = true; requestAnimationFrame(flushLogs); }
  });
}

function fromEvent(ev) {
  const s = {name: ev.service, state: ev.state, health: ev.health, pid: ev.pid};
  if (ev.pid === null) { s.uptime = null; s.cpu_percent = null; s.rss_bytes = null; }
  if (ev.state === "RUNNING" || ev.state === "STARTING") s.error = "";
  return s;
}

// -- logs ------------------------------------------------------------------------------

function matches(line) {
  const service = $("log-service").value;
  const text = $("log-filter").value.toLowerCase();
  return (!service || line.service === service) && (!text || line.text.toLowerCase().includes(text));
}

function lineNode(line) {
  const div = document.createElement("span");
  div.className = "l";
  const name = document.createElement("span");
  name.className = "n";
  name.style.color = hue(line.service);
  name.textContent = line.service;
  div.appendChild(name);
  div.appendChild(document.createTextNode(line.text));
  return div;
}

function flushLogs() {
  frameQueued = false;
  const fresh = pendingLines;
  pendingLines = [];
  logLines = logLines.concat(fresh);
  if (logLines.length > MAX_LOG_LINES) logLines = logLines.slice(-MAX_LOG_LINES);
  const view = $("log-view");
  const shown = fresh.filter(matches).slice(-MAX_LOG_LINES);
  const fragment = document.createDocumentFragment();
  for (const line of shown) fragment.appendChild(lineNode(line));
  view.appendChild(fragment);
  let extra = view.childElementCount - MAX_LOG_LINES;
  while (extra-- > 0) view.firstChild.remove();
  $("log-count").textContent = logLines.length + " lines kept";
  if ($("log-follow").checked) view.scrollTop = view.scrollHeight;
}

function redrawLogs() {
  const view = $("log-view");
  view.textContent = "";
  const fragment = document.createDocumentFragment();
  for (const line of logLines.filter(matches)) fragment.appendChild(lineNode(line));
  view.appendChild(fragment);
  view.scrollTop = view.scrollHeight;
}

function showLogsOf(name) {
  $("log-service").value = name;
  redrawLogs();
  $("log-view").scrollIntoView({behavior: "smooth", block: "start"});
}

$("log-service").onchange = redrawLogs;
$("log-filter").oninput = redrawLogs;
$("log-clear").onclick = () => { logLines = []; redrawLogs(); $("log-count").textContent = ""; };

async function loadTail() {
  const r = await api("GET", "/api/v1/services");
  if (!r.ok) return;
  const names = r.data.services.map((s) => s.name);
  const tails = await Promise.all(names.map((n) => api("GET", "/api/v1/services/" + encodeURIComponent(n) + "/logs?lines=200")));
  // Each tail is in order; the runner's merged order is not known here: service by service.
  logLines = [];
  for (const t of tails) if (t.ok) for (const l of t.data.lines) logLines.push({service: l.service, text: l.line});
  logLines = logLines.slice(-MAX_LOG_LINES);
  redrawLogs();
}

// -- login -----------------------------------------------------------------------------

function showLogin() {
  if (source) { source.close(); source = null; }
  $("login").hidden = false;
}

$("login-form").onsubmit = async (e) => {
  e.preventDefault();
  const body = $("login-pam").hidden || !$("user").value ? {token: $("token").value} : {user: $("user").value, password: $("password").value};
  $("login-error").textContent = "";
  const r = await api("POST", "/login", body);
  if (!r.ok) { $("login-error").textContent = r.data.error || "login failed"; return; }
  $("token").value = $("password").value = "";
  $("login").hidden = true;
  notice("ok", "Logged in", r.data.user === "token" ? "with a token (" + r.data.role + ")" : "as " + r.data.user);
  start();
};

$("logout").onclick = async () => {
  await api("POST", "/logout");
  notice("ok", "Logged out", "");
  showLogin();
};

async function start() {
  const who = await (await fetch("/api/v1/whoami", {credentials: "same-origin"})).json();
  $("login-pam").hidden = !who.login.pam;
  $("login-token").hidden = !who.login.token;
  role = who.role;
  if (!role) { showLogin(); return; }
  $("logout").hidden = who.via !== "cookie";
  document.querySelectorAll("button[data-all]").forEach((b) => { b.disabled = role === "read"; });
  await refresh();
  await loadTail();
  connect();
}

setInterval(() => { if (role && $("login").hidden) refresh(); }, REFRESH_MS);
start().catch((e) => notice("error", "Cannot load", e.message));
