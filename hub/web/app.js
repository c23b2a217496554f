// The engineers' page: live alarms (server-sent events, no polling), acknowledge and
// comment, the work-order board with its transitions, device status per site.
"use strict";

const $ = (sel) => document.querySelector(sel);
const api = "/api/v1";
const state = { token: sessionStorage.getItem("wuye-token"), site: null, alarms: new Map(), stream: null };

async function call(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${state.token}` };
  const r = await fetch(api + path, { ...options, headers });
  if (r.status === 401) { logout(); throw new Error("logged out"); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(body.detail || body);
  return body;
}

function post(path, data) {
  return call(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data || {}) });
}

function text(tag, content, cls) {
  const el = document.createElement(tag);
  el.textContent = content ?? "";
  if (cls) el.className = cls;
  return el;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "";
}

// -- log in ------------------------------------------------------------------------------
$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const r = await fetch(api + "/auth/token", { method: "POST", body: new URLSearchParams(form) });
  if (!r.ok) { $("#login-error").textContent = "wrong user or password"; return; }
  state.token = (await r.json()).access_token;
  sessionStorage.setItem("wuye-token", state.token);
  await start();
});

$("#logout").addEventListener("click", logout);

function logout() {
  sessionStorage.removeItem("wuye-token");
  state.token = null;
  if (state.stream) state.stream.close();
  $("#board").hidden = true; $("#who").hidden = true; $("#login").hidden = false;
}

async function start() {
  const me = await call("/me");
  $("#user").textContent = `${me.username} (${me.role})`;
  const sites = await call("/sites");
  const select = $("#site");
  select.replaceChildren(...sites.map((s) => { const o = text("option", s.name || s.id); o.value = s.id; return o; }));
  select.onchange = () => watch(select.value);
  $("#login").hidden = true; $("#who").hidden = false; $("#board").hidden = false;
  if (sites.length) await watch(sites[0].id);
}

// -- alarms, live ------------------------------------------------------------------------
async function watch(site) {
  state.site = site;
  state.alarms.clear();
  $("#cleared").replaceChildren();
  if (state.stream) state.stream.close();
  const url = `${api}/alarms/stream?site=${encodeURIComponent(site)}&access_token=${encodeURIComponent(state.token)}`;
  const es = new EventSource(url);
  state.stream = es;
  es.addEventListener("open", () => { $("#live").textContent = "live"; $("#live").className = "live on"; });
  es.addEventListener("error", () => { $("#live").textContent = "reconnecting"; $("#live").className = "live off"; });
  es.addEventListener("alarms", (ev) => {
    state.alarms.clear();
    for (const a of JSON.parse(ev.data)) state.alarms.set(a.id, a);
    renderAlarms();
  });
  es.addEventListener("alarm", (ev) => {
    const a = JSON.parse(ev.data);
    if (a.active) state.alarms.set(a.id, a);
    else if (state.alarms.delete(a.id)) {
      $("#cleared").prepend(text("li", `${when(a.cleared_at)} ${a.device_id}: ${a.message} cleared`));
    }
    renderAlarms();
    refresh();  // work orders follow alarms, devices follow their data
  });
  await refresh();
}

const RANK = { critical: 4, major: 3, minor: 2, warning: 1, indeterminate: 0 };

function renderAlarms() {
  const rows = [...state.alarms.values()].sort((a, b) => RANK[b.severity] - RANK[a.severity] || b.started_at.localeCompare(a.started_at));
  $("#alarm-count").textContent = rows.length;
  $("#alarms tbody").replaceChildren(...rows.map((a) => {
    const tr = document.createElement("tr");
    tr.dataset.alarm = a.id;
    tr.append(
      Object.assign(document.createElement("td"), { innerHTML: "" }),
      text("td", `${a.gateway_id}/${a.device_id}`),
      text("td", a.message),
      text("td", when(a.started_at)),
      text("td", a.acknowledged ? `acknowledged by ${a.acked_by}` : "new"),
    );
    tr.firstChild.append(text("span", a.severity, `sev ${a.severity}`));
    const actions = document.createElement("td");
    if (!a.acknowledged) actions.append(button("acknowledge", () => post(`/alarms/${a.id}/ack`, {})));
    actions.append(button("comment", async () => {
      const note = prompt("comment");
      if (note) await post(`/alarms/${a.id}/comment`, { note });
    }));
    tr.append(actions);
    return tr;
  }));
}

function button(label, action) {
  const b = text("button", label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await action(); } catch (e) { alert(e.message); } finally { b.disabled = false; }
  });
  return b;
}

// -- work orders and devices -------------------------------------------------------------
let refreshing = null;
async function refresh() {
  if (refreshing) return refreshing;  // one refresh at a time; changes during it follow
  refreshing = Promise.all([renderWorkOrders(), renderDevices()]).finally(() => { refreshing = null; });
  return refreshing;
}

const COLUMNS = ["new", "accepted", "in_progress", "paused", "finished", "awaiting_payment", "awaiting_rating", "follow_up"];
// actions a card offers when the order allows them (the hub still checks who may);
// dispatching, transferring, rating and paying need more than a click: the API takes them
const ON_CARD = ["grab", "start", "pause", "resume", "return", "finish", "confirm", "call_back", "close"];
const NEEDS_NOTE = new Set(["return", "pause", "close", "reopen"]);

async function renderWorkOrders() {
  let orders;
  try { orders = await call(`/workorders?site=${encodeURIComponent(state.site)}`); }
  catch (e) { $("#workorders").replaceChildren(text("p", `work orders unavailable: ${e.message}`)); return; }
  const columns = COLUMNS.map((st) => {
    const col = text("div", "", "column");
    col.dataset.state = st;
    col.append(text("h3", st.replaceAll("_", " ")));
    for (const o of orders.filter((x) => x.state === st)) {
      const card = text("div", "", "card");
      card.dataset.workorder = o.id;
      card.append(text("div", `#${o.id} ${o.title}`), text("small", `${o.priority} · ${o.assignee || "unassigned"}`));
      for (const action of (o.possible || []).filter((a) => ON_CARD.includes(a))) {
        card.append(button(action, async () => {
          const note = NEEDS_NOTE.has(action) ? prompt(`why ${action}?`) : "";
          if (NEEDS_NOTE.has(action) && !note) return;
          await post(`/workorders/${o.id}/${action}`, { note });
          await refresh();
        }));
      }
      col.append(card);
    }
    return col;
  });
  $("#workorders").replaceChildren(...columns);
}

async function renderDevices() {
  const devices = await call(`/sites/${encodeURIComponent(state.site)}/devices`);
  $("#devices tbody").replaceChildren(...devices.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.device = d.device_id;
    const status = d.online === false ? "offline" : d.online ? "online" : "unknown";
    tr.append(text("td", `${d.gateway_id}/${d.device_id}`), text("td", d.profile), text("td", status, status), text("td", when(d.last_seen)));
    return tr;
  }));
}

if (state.token) start().catch(logout);
