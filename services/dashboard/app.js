// skipwatch dashboard: lists alerts from /v1/alerts, follows /v1/alerts/stream, lets operators act.
//
// The live stream is read with fetch() rather than EventSource: EventSource cannot send an
// Authorization header, and a token in the URL ends up in proxy and browser logs. fetch sends the
// same header as every other call; this file parses the text/event-stream format itself and
// reconnects with backoff, re-listing alerts on every (re)connect so nothing is missed meanwhile.
// Every server value is put into the page as text (textContent), never as HTML.
//
// Labels come from i18n.js (zh-CN by default, English on the switch, remembered); maps from
// map.js (Leaflet). `#/loan/<id>` shows one loan full width: its map, track replay and timeline.

import { age, lang, ruleDescription, ruleTitle, setLang, setRules, t, translatePage, when } from "./i18n.js";
import { mountMap } from "./map.js";
import { mountPlaces } from "./places.js";

const TOKEN_KEY = "skipwatch.token";
const SEVERITY_RANK = { critical: 2, warning: 1, info: 0 };
const OPEN = ["firing", "acknowledged"];
const PAGE = 100;
const UNASSIGNED = "unassigned"; // the API's filter value for alerts nobody is assigned to
const STALL_MS = 45_000; // no bytes for this long (heartbeats come every 15 s): reconnect

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  alerts: new Map(),
  order: [], // ids of the rows, in the API's order
  next: null, // next_cursor of the list shown
  facets: null, // GET /v1/alerts/facets for the filters shown
  labelFacets: null, // the same without the label filter (the label options' counts)
  ageTotals: null, // alerts listed per start window
  selected: null,
  stream: null, // AbortController of the running stream
  generation: 0, // bumps on every (re)list, so late answers of older lists are dropped
  maps: new Map(), // container id -> mounted map (destroyed when replaced)
  config: null, // /static/config.json: map tiles
  live: "off",
  checked: new Set(), // alerts picked for a bulk action
  cursor: -1, // keyboard position in the queue (j/k); -1 before the first j
  current: null, // the alert shown in the panel
  loan: null, // the loan shown in the panel (for its time zone)
};

// --- small helpers ---------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const tz = () => state.loan?.timezone || "Asia/Shanghai";

function toast(message, bad = false) {
  const el = $("toast");
  el.textContent = message;
  el.classList.toggle("bad", bad);
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => null);
  if (response.status === 401) signOut(t("login.rejected"));
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// A raw body (a file being imported) with its own content type.
async function apiRaw(path, text, contentType) {
  const response = await fetch(path, {
    method: "POST",
    headers: { Authorization: `Bearer ${state.token}`, Accept: "application/json", "Content-Type": contentType },
    body: text,
  });
  const body = await response.json().catch(() => null);
  if (response.status === 401) signOut(t("login.rejected"));
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// --- sign in / out ---------------------------------------------------------------------------

function showLogin(message = "") {
  $("app").hidden = true;
  $("loan-view").hidden = true;
  $("overview").hidden = true;
  $("places").hidden = true;
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.stream?.abort();
  state.alerts.clear();
  state.order = [];
  state.next = null;
  setLive("off");
  showLogin(message);
}

async function signIn(token) {
  state.token = token;
  try {
    // Checks the token (and that it may read alerts); the role decides which buttons show.
    state.role = (await api("/v1/whoami")).role;
  } catch (err) {
    state.token = null;
    const message = err.status === 403 ? t("login.ingest")
      : err.status === 401 ? t("login.unknown") : t("login.unreachable", { msg: err.message });
    showLogin(message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  // Rule titles and descriptions in both languages; without them alerts show their own titles.
  setRules(await api("/v1/rules").catch(() => []));
  $("login").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  $("nav").hidden = false;
  await reload();
  follow();
  route();
}

// --- listing ---------------------------------------------------------------------------------
//
// Every filter, the sort and the counts are the server's (GET /v1/alerts and /v1/alerts/facets):
// the queue shows pages of what the API lists for the filters chosen, "load more" asks for the
// next page, and each option's count is the API's count over the whole portfolio. A live change
// updates, adds or removes one row (its membership is checked here against the same filters)
// and asks the API for fresh counts.

const AGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
const SORTS = { severity: "-severity", risk: "-risk_score", newest: "-started_at", oldest: "started_at" };

function filters() {
  const status = $("f-status").value;
  return {
    statuses: status === "open" ? OPEN : [status],
    severity: $("f-severity").value,
    loan: $("f-loan").value.trim(),
    rule: $("q-rule").value,
    assignee: $("q-assignee").value,
    label: $("q-label").value,
    age: $("q-age").value,
    sort: $("q-sort").value,
  };
}

const sinceOf = (age) => (AGES[age] ? new Date(Date.now() - AGES[age] * 1000).toISOString() : "");

/** The API's filter parameters for `f`. */
function filterQuery(f) {
  const q = new URLSearchParams();
  for (const s of f.statuses) q.append("status", s);
  for (const name of ["severity", "loan", "rule", "assignee", "label"]) if (f[name]) q.set(name, f[name]);
  const since = sinceOf(f.age);
  if (since) q.set("since", since);
  return q;
}

function listUrl(f, cursor = null) {
  const q = filterQuery(f);
  q.set("sort", SORTS[f.sort] || SORTS.severity);
  q.set("limit", String(PAGE));
  if (cursor) q.set("cursor", cursor);
  return `/v1/alerts?${q}`;
}

const facetsUrl = (f) => `/v1/alerts/facets?${filterQuery(f)}`;

/** Does one (live) alert belong in the list for `f`? The same rules the API applies. */
function matches(alert, f = filters()) {
  const since = sinceOf(f.age);
  return f.statuses.includes(alert.status)
    && (!f.severity || alert.severity === f.severity)
    && (!f.loan || alert.loan_id === f.loan)
    && (!f.rule || alert.rule_id === f.rule)
    && (!f.assignee || (f.assignee === UNASSIGNED ? !alert.assigned : alert.assigned?.assignee === f.assignee))
    && (!f.label || labelPairs(alert).includes(f.label))
    && (!since || Date.parse(alert.started_at) >= Date.parse(since));
}

const labelPairs = (alert) => Object.entries(alert.labels || {}).map(([k, v]) => `${k}=${v}`);

/** The API's order (services/alert_index.py): the sort key, then newest first, then id. */
function compare(a, b, sort = filters().sort) {
  const started = Date.parse(b.started_at) - Date.parse(a.started_at);
  const id = a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  if (sort === "oldest") return -started || id;
  if (sort === "newest") return started || id;
  const primary = sort === "risk" ? b.risk_score - a.risk_score
    : SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity];
  return primary || started || id;
}

async function reload() {
  const generation = ++state.generation;
  const f = filters();
  try {
    const [page] = await Promise.all([api(listUrl(f)), loadCounts(generation)]);
    if (generation !== state.generation) return;
    state.alerts.clear();
    for (const alert of page.items) state.alerts.set(alert.id, alert);
    state.order = page.items.map((a) => a.id);
    state.next = page.next_cursor;
    render();
  } catch (err) {
    if (err.status !== 401) toast(t("err.load", { msg: err.message }), true);
  }
}

async function loadMore() {
  if (!state.next) return;
  const generation = state.generation;
  try {
    const page = await api(listUrl(filters(), state.next));
    if (generation !== state.generation) return;
    for (const alert of page.items) {
      if (!state.alerts.has(alert.id)) state.order.push(alert.id);
      state.alerts.set(alert.id, alert);
    }
    state.next = page.next_cursor;
    render();
  } catch (err) {
    if (err.status !== 401) toast(t("err.load", { msg: err.message }), true);
  }
}

/** The counts: facets for the filters, the label options without the label filter (one label is
 * chosen at a time) and the total per start window. */
async function loadCounts(generation = state.generation) {
  const f = filters();
  const total = (g) => api(`/v1/alerts?${filterQuery(g)}&limit=1`).then((p) => p.total);
  const [facets, labels, ...ages] = await Promise.all([
    api(facetsUrl(f)),
    f.label ? api(facetsUrl({ ...f, label: "" })) : null,
    ...["", ...Object.keys(AGES)].map((age) => (age === f.age ? null : total({ ...f, age }))),
  ]);
  if (generation !== state.generation) return;
  state.facets = facets;
  state.labelFacets = labels || facets;
  state.ageTotals = Object.fromEntries(["", ...Object.keys(AGES)].map((age, i) => [age, age === f.age ? facets.total : ages[i]]));
  renderCounts();
}

function scheduleCounts() {
  clearTimeout(scheduleCounts.timer);
  scheduleCounts.timer = setTimeout(() => loadCounts().catch(() => {}), 400);
}

/** Refill a select: "all" and each value with the API's count; the chosen value always stays. */
function fillOptions(id, entries, allCount, label) {
  const select = $(id);
  const chosen = select.value;
  const options = [["", t("f.all"), allCount], ...entries];
  if (chosen && !options.some(([v]) => v === chosen)) options.push([chosen, chosen, 0]);
  select.replaceChildren(...options.map(([value, text, n]) =>
    h("option", { value, "data-count": n ?? null }, n == null ? text : `${text} (${n})`)));
  select.value = chosen;
  if (label) select.setAttribute("aria-label", label);
}

const sum = (counts) => Object.values(counts || {}).reduce((a, b) => a + b, 0);

function renderCounts() {
  const facets = state.facets;
  if (!facets) return;
  const statusCount = (s) => (s === "open" ? OPEN.reduce((n, x) => n + (facets.status[x] ?? 0), 0) : facets.status[s]);
  for (const option of $("f-status").options) {
    const n = statusCount(option.value);
    option.textContent = t(`status.${option.value}`) + (n == null ? "" : ` (${n})`);
    if (n == null) option.removeAttribute("data-count"); else option.dataset.count = String(n);
  }
  for (const option of $("f-severity").options) {
    const n = option.value ? facets.severity[option.value] : sum(facets.severity);
    option.textContent = (option.value ? t(`severity.${option.value}`) : t("f.all")) + ` (${n})`;
    option.dataset.count = String(n);
  }
  fillOptions("q-rule", Object.entries(facets.rule).map(([r, n]) => [r, ruleTitle(r, r), n]), sum(facets.rule), t("q.rule"));
  fillOptions("q-assignee", Object.entries(facets.assignee).map(([a, n]) => [a, a === UNASSIGNED ? t("q.unassigned") : a, n]),
    sum(facets.assignee), t("q.assignee"));
  const labels = Object.entries(state.labelFacets.label).flatMap(([k, values]) =>
    Object.entries(values).map(([v, n]) => [`${k}=${v}`, `${k}=${v}`, n]));
  fillOptions("q-label", labels, state.labelFacets.total, t("q.label"));
  const ages = state.ageTotals || {};
  fillOptions("q-age", Object.keys(AGES).map((age) => [age, t(`q.age.${age}`), ages[age]]), ages[""], t("q.age"));
  const shown = state.order.length;
  const f = filters();
  const severities = ["critical", "warning", "info"].filter((s) => (!f.severity || f.severity === s) && facets.severity[s] > 0);
  $("counts").replaceChildren(
    ...severities.map((s) => h("span", { class: `badge ${s}` }, `${facets.severity[s]} ${t(`severity.${s}`)}`)),
    h("span", { class: "count", "data-total": String(facets.total), "data-shown": String(shown) },
      t("q.total", { n: shown, total: facets.total })));
}

function riskCell(score) {
  const level = score >= 70 ? "high" : score < 40 ? "low" : "";
  // Width through the CSSOM: the Content-Security-Policy forbids inline style attributes.
  const fill = h("span");
  fill.style.width = `${Math.min(100, Math.max(0, score))}%`;
  return h("span", { class: "risk" },
    h("span", { class: `risk-bar ${level}`, "aria-hidden": "true" }, fill),
    String(score));
}

function row(alert) {
  const open = () => select(alert.id);
  const box = h("input", {
    type: "checkbox", class: "pick", "aria-label": t("q.pick", { id: alert.id }),
    checked: state.checked.has(alert.id),
    onclick: (e) => e.stopPropagation(),
    onchange: (e) => { if (e.target.checked) state.checked.add(alert.id); else state.checked.delete(alert.id); renderBulk(); },
  });
  return h("tr", {
    "data-id": alert.id,
    class: `sev-${alert.severity}`,
    "aria-selected": String(state.selected === alert.id),
    onclick: open,
  },
  h("td", { class: "pick-cell" }, box),
  h("td", {}, h("span", { class: `badge ${alert.severity}` }, t(`severity.${alert.severity}`))),
  h("td", {},
    h("button", { class: "title-btn", type: "button", onclick: (e) => { e.stopPropagation(); open(); } },
      ruleTitle(alert.rule_id, alert.title)),
    h("span", { class: "sub mono" }, alert.rule_id)),
  h("td", { class: "mono nowrap" }, alert.loan_id),
  h("td", { class: "num" }, riskCell(alert.risk_score)),
  h("td", {}, h("span", { class: `status ${alert.status}` }, t(`status.${alert.status}`)),
    alert.silenced ? h("span", { class: "sub muted-flag", "data-silenced": "true", title: alert.silenced_by.join(", ") }, `🔕 ${t("silence.muted")}`) : null,
    alert.assigned ? h("span", { class: "sub" }, `→ ${alert.assigned.assignee}`) : null),
  h("td", { class: "age nowrap", title: when(alert.started_at), "data-started": alert.started_at },
    age(alert.started_at)));
}

function render(flashId = null) {
  const alerts = state.order.map((id) => state.alerts.get(id)).filter(Boolean);
  for (const id of [...state.checked]) if (!state.alerts.has(id)) state.checked.delete(id);
  $("rows").replaceChildren(...alerts.map(row));
  renderBulk();
  markCursor();
  $("empty").hidden = alerts.length > 0;
  $("more").hidden = !state.next;
  renderCounts();
  if (flashId) {
    const tr = $("rows").querySelector(`tr[data-id="${CSS.escape(flashId)}"]`);
    if (tr) {
      tr.classList.add("flash");
      requestAnimationFrame(() => requestAnimationFrame(() => tr.classList.remove("flash")));
    }
  }
}

function refreshAges() {
  for (const td of document.querySelectorAll("td.age")) td.textContent = age(td.dataset.started);
}

function upsert(alert) {
  // The live stream does not say which silences mute an alert (null): keep what the list said.
  const known = state.alerts.get(alert.id) || (state.current?.id === alert.id ? state.current : null);
  if (alert.silenced == null && known?.silenced != null) {
    alert = { ...alert, silenced: known.silenced, silenced_by: known.silenced_by };
  }
  state.order = state.order.filter((id) => id !== alert.id);
  state.alerts.delete(alert.id);
  if (matches(alert)) {
    // Where the API would list it; past the last row loaded while more pages follow, it comes
    // with "load more" instead.
    const at = state.order.findIndex((id) => compare(alert, state.alerts.get(id)) < 0);
    if (at >= 0 || !state.next) {
      state.order.splice(at >= 0 ? at : state.order.length, 0, alert.id);
      state.alerts.set(alert.id, alert);
    }
  }
  render(alert.id);
  scheduleCounts();
  if (state.selected === alert.id) renderAlert(alert);
}

// --- keyboard and bulk actions -----------------------------------------------------------------

function markCursor() {
  const rows = [...$("rows").children];
  if (!rows.length) { state.cursor = -1; return; }
  state.cursor = Math.min(state.cursor, rows.length - 1); // -1: no row yet (j starts at the top)
  rows.forEach((tr, i) => tr.classList.toggle("cursor", i === state.cursor));
}

function moveCursor(delta) {
  const rows = [...$("rows").children];
  if (!rows.length) return;
  state.cursor = Math.min(Math.max(state.cursor + delta, 0), rows.length - 1);
  markCursor();
  rows[state.cursor].scrollIntoView({ block: "nearest" });
  rows[state.cursor].querySelector(".title-btn").focus();
}

function onQueueKey(e) {
  if ($("app").hidden || e.ctrlKey || e.metaKey || e.altKey) return;
  const typing = e.target.closest?.("input:not(.pick), select, textarea");
  if (typing) return;
  const rows = [...$("rows").children];
  if (e.key === "j") { moveCursor(1); e.preventDefault(); }
  else if (e.key === "k") { moveCursor(-1); e.preventDefault(); }
  else if (e.key === "x" && rows[state.cursor]) { rows[state.cursor].querySelector(".pick").click(); e.preventDefault(); }
  else if (e.key === "Enter" && rows[state.cursor] && !e.target.closest?.("button, a")) {
    select(rows[state.cursor].dataset.id);
    e.preventDefault();
  }
}

function renderBulk() {
  const bar = $("bulk");
  const n = state.checked.size;
  bar.hidden = n === 0;
  if (!n) return;
  const assignee = h("input", { type: "text", placeholder: t("act.assign.placeholder"), "aria-label": t("act.assign.to"), size: "12" });
  const run = async (path, body, done) => {
    const ids = [...state.checked];
    let ok = 0;
    const failed = [];
    for (const id of ids) {
      try {
        upsert(await api(`/v1/alerts/${encodeURIComponent(id)}/${path}`, { method: "POST", body }));
        ok += 1;
      } catch (err) {
        failed.push(`${id}: ${err.status === 403 ? t("readonly") : err.message}`);
      }
    }
    state.checked.clear();
    render();
    toast(t("q.bulk.done", { action: t(done), ok, failed: failed.length }) + (failed.length ? ` — ${failed[0]}` : ""), failed.length > 0);
  };
  bar.replaceChildren(
    h("span", { class: "count", "data-checked": String(n) }, t("q.selected", { n })),
    canAct() ? h("button", { class: "btn primary", type: "button", "data-bulk": "ack", onclick: () => run("ack", undefined, "done.ack") }, t("act.ack")) : null,
    canAct() ? h("form", {
      onsubmit: (e) => { e.preventDefault(); if (assignee.value.trim()) run("assign", { assignee: assignee.value.trim() }, "done.assign"); },
    }, assignee, h("button", { class: "btn", type: "submit", "data-bulk": "assign" }, t("act.assign"))) : null,
    h("button", { class: "btn ghost", type: "button", onclick: () => { state.checked.clear(); render(); } }, t("q.clear")));
}

// --- language ----------------------------------------------------------------------------------

function applyLanguage() {
  translatePage();
  $("lang").textContent = t("lang.switch");
  setLive(state.live);
  render();
  if (state.current) renderAlert(state.current);
  if (state.selected && state.current) loadLoan(state.current.loan_id, state.selected);
  if (location.hash.startsWith("#/loan/") || ["#/overview", "#/places"].includes(location.hash)) route(true);
}

// --- live stream (fetch + text/event-stream parser) ------------------------------------------

function setLive(kind) {
  const el = $("live");
  state.live = kind;
  el.dataset.state = kind;
  el.textContent = t(`live.${kind}`);
}

async function follow() {
  state.stream?.abort();
  const controller = new AbortController();
  state.stream = controller;
  let delay = 1000;
  while (!controller.signal.aborted && state.token) {
    try {
      await readStream(controller, () => { delay = 1000; });
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err.status === 401 || err.status === 403) return;
    }
    if (controller.signal.aborted) return;
    setLive("retry");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15_000);
  }
}

async function readStream(controller, onOpen) {
  const stall = new AbortController();
  let timer;
  const alive = () => {
    clearTimeout(timer);
    timer = setTimeout(() => stall.abort(), STALL_MS);
  };
  controller.signal.addEventListener("abort", () => stall.abort(), { once: true });
  alive();
  try {
    const response = await fetch("/v1/alerts/stream", {
      headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
      signal: stall.signal,
      cache: "no-store",
    });
    if (response.status === 401) { signOut(t("login.rejected")); return; }
    if (!response.ok || !response.body) throw new ApiError(response.status, null);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      alive();
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const message = parseEvent(block);
        if (message.event === "ready") {
          onOpen();
          setLive("on");
          await reload(); // catch up on anything that changed while disconnected
        } else if (message.event === "alert" && message.data) {
          upsert(JSON.parse(message.data));
        }
      }
    }
  } finally {
    clearTimeout(timer);
  }
}

function parseEvent(block) {
  const message = { event: "message", data: "" };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // comments are heartbeats
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") message.event = value;
    else if (field === "data") data.push(value);
  }
  message.data = data.join("\n");
  return message;
}

// --- side panel: evidence, loan, timeline, actions -------------------------------------------

async function select(id) {
  state.selected = id;
  for (const tr of $("rows").children) tr.setAttribute("aria-selected", String(tr.dataset.id === id));
  try {
    const alert = await api(`/v1/alerts/${encodeURIComponent(id)}`);
    if (state.selected !== id) return;
    renderAlert(alert);
    $("panel").querySelector("h2")?.focus();
    loadLoan(alert.loan_id, id);
  } catch (err) {
    toast(t("err.open", { msg: err.message }), true);
  }
}

function closePanel() {
  const id = state.selected;
  state.selected = null;
  state.current = null;
  dropMap("panel-map");
  $("panel").hidden = true;
  for (const tr of $("rows").children) tr.setAttribute("aria-selected", "false");
  $("rows").querySelector(`tr[data-id="${CSS.escape(id || "")}"] .title-btn`)?.focus();
}

function evidenceItem(item) {
  if (item.kind === "state") {
    const value = item.text ?? (item.value === null ? "—" : item.unit ? `${item.value} ${item.unit}` : item.value);
    return h("li", {}, h("span", { class: "k mono" }, item.name), h("span", { class: "v" }, String(value)));
  }
  if (item.kind === "event") {
    return h("li", {},
      h("span", { class: "k" }, item.what || item.topic),
      h("span", { class: "v mono" }, `${item.topic} · ${item.event_id}`));
  }
  if (item.kind === "risk") {
    const reasons = (item.reasons || []).map((r) =>
      h("li", {}, `+${r.points} ${r.detail || r.code}`));
    return h("li", { class: "risk-item" },
      h("div", {}, h("span", { class: "k" }, t("risk.score")),
        reasons.length ? h("ul", { class: "reasons" }, reasons) : null),
      h("span", { class: "v" }, String(item.score)));
  }
  // Anything else (e.g. a person the rule looked at): its fields as "key: value" pairs.
  const fields = Object.entries(item).filter(([k]) => k !== "kind")
    .map(([k, v]) => `${k.replaceAll("_", " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  return h("li", {}, h("span", { class: "k" }, (item.kind || "item").replaceAll("_", " ")),
    h("span", { class: "v" }, fields.join(" · ")));
}

function actionBar(alert) {
  if (!canAct()) return null; // viewers: read only, no buttons
  const act = async (path, body, done) => {
    try {
      const updated = await api(`/v1/alerts/${encodeURIComponent(alert.id)}/${path}`, { method: "POST", body });
      upsert(updated);
      renderAlert(updated);
      toast(t(done));
    } catch (err) {
      toast(err.status === 403 ? t("readonly") : err.message, true);
    }
  };
  const closed = alert.status === "resolved";
  const snooze = h("select", { "aria-label": t("act.snooze.for") },
    h("option", { value: "60" }, t("act.h1")), h("option", { value: "240" }, t("act.h4")),
    h("option", { value: "1440" }, t("act.d1")), h("option", { value: "4320" }, t("act.d3")));
  const assignee = h("input", {
    type: "text", placeholder: t("act.assign.placeholder"), "aria-label": t("act.assign.to"), size: "12",
    value: alert.assigned?.assignee || "",
  });
  return h("div", { class: "actions" },
    h("button", {
      class: "btn primary", type: "button", "data-action": "ack", disabled: closed || alert.status === "acknowledged",
      onclick: () => act("ack", undefined, "done.ack"),
    }, t("act.ack")),
    h("button", {
      class: "btn", type: "button", "data-action": "resolve", disabled: closed,
      onclick: () => act("resolve", undefined, "done.resolve"),
    }, t("act.resolve")),
    h("form", {
      onsubmit: (e) => { e.preventDefault(); act("snooze", { minutes: Number(snooze.value) }, "done.snooze"); },
    }, snooze, h("button", { class: "btn", type: "submit", "data-action": "snooze", disabled: closed }, t("act.snooze"))),
    h("form", {
      onsubmit: (e) => {
        e.preventDefault();
        if (assignee.value.trim()) act("assign", { assignee: assignee.value.trim() }, "done.assign");
      },
    }, assignee, h("button", { class: "btn", type: "submit", "data-action": "assign" }, t("act.assign"))));
}

function renderAlert(alert) {
  state.current = alert;
  const panel = $("panel");
  const zone = tz();
  const facts = [
    ["fact.status", h("span", { class: `status ${alert.status}` }, t(`status.${alert.status}`))],
    ["fact.loan", h("a", { class: "mono", href: `#/loan/${encodeURIComponent(alert.loan_id)}` }, alert.loan_id)],
    ["fact.rule", h("span", { class: "mono" }, alert.rule_id)],
    ["fact.risk", String(alert.risk_score)],
    ["fact.started", `${when(alert.started_at, zone)} (${t("ago", { age: age(alert.started_at) })})`],
    ["fact.updated", when(alert.updated_at, zone)],
    alert.acknowledged && ["fact.acked", t("by", { who: alert.acknowledged.by, when: when(alert.acknowledged.at, zone) })],
    alert.assigned && ["fact.assigned", t("assigned.by", { assignee: alert.assigned.assignee, by: alert.assigned.by })],
    alert.silenced_until && ["fact.silenced", when(alert.silenced_until, zone)],
    alert.silenced && ["fact.silence", h("span", { id: "silenced-by", "data-silences": alert.silenced_by.join(" ") },
      `${t("silence.muted")} · `, h("span", { class: "mono" }, alert.silenced_by.join(", ")))],
    alert.resolved && ["fact.resolved", t("by", { who: alert.resolved.by, when: when(alert.resolved.at, zone) })],
    alert.location && ["fact.position", `${alert.location.lat.toFixed(5)}, ${alert.location.lon.toFixed(5)}`],
  ].filter(Boolean);
  const existingMap = panel.querySelector("#panel-map");
  const keepMap = existingMap && existingMap.dataset.alert === alert.id;
  const existingLoan = panel.querySelector("#loan-section");
  const title = ruleTitle(alert.rule_id, alert.title);
  panel.replaceChildren(
    h("div", { class: "panel-head" },
      h("div", {},
        h("span", { class: `badge ${alert.severity}` }, t(`severity.${alert.severity}`)),
        h("h2", { id: "panel-title", tabindex: "-1" }, title)),
      h("button", { class: "btn ghost close", type: "button", "aria-label": t("close"), onclick: closePanel }, "×")),
    title !== alert.title ? h("p", { class: "muted orig-title", lang: "en" }, alert.title) : null,
    h("p", { class: "summary" }, alert.summary),
    ruleDescription(alert.rule_id)
      ? h("details", { class: "rule-description" }, h("summary", {}, t("rule.about")),
        h("p", {}, ruleDescription(alert.rule_id)))
      : null,
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, v)])),
    actionBar(alert),
    h("h3", {}, t("map")),
    keepMap ? existingMap : h("section", { id: "panel-map", class: "map-block", "data-alert": alert.id }),
    h("p", {}, h("a", { class: "btn", href: `#/loan/${encodeURIComponent(alert.loan_id)}` }, t("loan.open"))),
    h("h3", {}, t("evidence")),
    h("ul", { class: "evidence", "aria-label": t("evidence") }, alert.evidence.map(evidenceItem)),
    existingLoan && existingLoan.dataset.loan === alert.loan_id
      ? existingLoan : h("section", { id: "loan-section", "data-loan": alert.loan_id }));
  panel.setAttribute("aria-labelledby", "panel-title");
  panel.hidden = false;
}

function timelineText(entry) {
  const d = entry.data;
  switch (entry.kind) {
    case "alert":
      return d.action
        ? `${d.action} · ${d.by || "?"}${d.assignee ? ` → ${d.assignee}` : ""}: ${ruleTitle(d.rule_id, d.title)}`
        : `${t(`status.${d.status}`)} (${t(`severity.${d.severity}`)}): ${ruleTitle(d.rule_id, d.title)}`;
    case "payment":
      return `${d.type.replaceAll("_", " ")} · #${d.installment_no} · ${d.amount} ${d.currency}`;
    case "contact":
      return `${d.channel} ${d.party.replaceAll("_", " ")} → ${d.outcome.replaceAll("_", " ")}`;
    case "ping":
      return `${d.lat.toFixed(4)}, ${d.lon.toFixed(4)}${d.speed_kmh != null ? ` · ${d.speed_kmh} km/h` : ""}`
        + (d.alarms?.length ? ` · ${d.alarms.join(", ")}` : "");
    default:
      return JSON.stringify(d);
  }
}

const orNull = (promise) => promise.catch((e) => (e.status === 404 ? null : Promise.reject(e)));

async function fetchLoan(loanId) {
  const id = encodeURIComponent(loanId);
  const [loan, timeline, track] = await Promise.all([
    orNull(api(`/v1/loans/${id}`)),
    orNull(api(`/v1/loans/${id}/timeline?limit=50`)),
    orNull(api(`/v1/loans/${id}/track`)),
  ]);
  return { loan, timeline, track };
}

async function placesNear(points) {
  if (!points.length) return [];
  const lat = points.reduce((s, p) => s + p.lat, 0) / points.length;
  const lon = points.reduce((s, p) => s + p.lon, 0) / points.length;
  const q = new URLSearchParams({ lat: lat.toFixed(6), lon: lon.toFixed(6), radius_m: "15000", limit: "200" });
  return (await api(`/v1/places?${q}`)).items;
}

function dropMap(id) {
  state.maps.get(id)?.destroy();
  state.maps.delete(id);
}

async function drawMap(containerId, { loan, track, alert }) {
  const container = $(containerId);
  if (!container) return;
  const points = [...(track?.latest || []), ...(alert?.location ? [alert.location] : [])];
  if (!points.length && track?.fixes?.length) points.push(track.fixes[track.fixes.length - 1]);
  if (!points.length && loan?.home_region?.center) {
    points.push({ lat: loan.home_region.center[0], lon: loan.home_region.center[1] });
  }
  let places = [];
  try {
    places = await placesNear(points);
  } catch (err) {
    toast(err.message, true);
  }
  if ($(containerId) !== container) return;
  dropMap(containerId);
  state.maps.set(containerId, mountMap(container, { config: state.config, loan, track, places, alert }));
}

function loanSignals(signals) {
  if (!signals) return "—";
  const on = ["out_of_region", "offline", "at_risk_place", "overdue", "unreachable"].filter((k) => signals[k]);
  return on.length ? on.map((k) => t(`ov.signal.${k}`)).join(" · ") : t("loan.signals.none");
}

function loanFacts(loan) {
  const zone = loan.timezone || "Asia/Shanghai";
  return [
    ["loan.borrower", loan.borrower ? `${loan.borrower.name} · ${loan.borrower.phone}` : "—"],
    ["loan.vehicle", loan.vehicle ? `${loan.vehicle.plate} · ${loan.vehicle.vin}` : "—"],
    ["loan.status", loan.status ? t(`loanstatus.${loan.status}`) : "—"],
    ["loan.risk", String(loan.signals ? loan.signals.risk_score : loan.risk_score)],
    ["loan.signals", loanSignals(loan.signals)],
    ["loan.open_alerts", String(loan.open_alerts.length)],
    ["loan.last_event", loan.last_event_at ? `${when(loan.last_event_at, zone)} (${t("ago", { age: age(loan.last_event_at) })})` : "—"],
    ["loan.timezone", zone],
  ];
}

function timelineList(timeline, zone) {
  const items = timeline?.items || [];
  return items.length
    ? h("ol", { class: "timeline", "aria-label": t("timeline") }, items.map((e) =>
      h("li", {}, h("span", { class: `kind ${e.kind}` }, t(`kind.${e.kind}`)),
        h("div", {}, h("time", { datetime: e.ts }, when(e.ts, zone)), timelineText(e)))))
    : h("p", { class: "muted" }, t("timeline.empty"));
}

async function loadLoan(loanId, alertId) {
  let data = { loan: null, timeline: null, track: null };
  try {
    data = await fetchLoan(loanId);
  } catch (err) {
    toast(t("err.loan", { msg: err.message }), true);
  }
  if (state.selected !== alertId) return;
  state.loan = data.loan;
  const section = $("loan-section");
  if (!section) return;
  const { loan, timeline } = data;
  section.replaceChildren(
    h("h3", {}, t("loan", { id: loanId })),
    loan ? h("dl", { class: "facts" }, loanFacts(loan).map(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, v)]))
      : h("p", { class: "muted" }, t("loan.unknown")),
    h("h3", {}, t("timeline")),
    timelineList(timeline, loan?.timezone));
  if (state.current) renderAlert(state.current); // the loan's time zone for the alert's times
  await drawMap("panel-map", { ...data, alert: state.current });
}

// --- the loan view (#/loan/<id>) ----------------------------------------------------------------

async function showLoanView(loanId) {
  $("app").hidden = true;
  $("loan-view").hidden = false;
  const view = $("loan-view");
  view.replaceChildren(
    h("div", { class: "loan-head" },
      h("a", { class: "btn ghost", href: "#/" }, `← ${t("loan.back")}`),
      h("h1", { id: "loan-title", tabindex: "-1" }, t("loan", { id: loanId }))),
    h("div", { class: "loan-grid" },
      h("section", { id: "loan-map", class: "map-block big" }),
      h("div", { id: "loan-side" })));
  $("loan-title").focus();
  let data;
  try {
    data = await fetchLoan(loanId);
  } catch (err) {
    toast(t("err.loan", { msg: err.message }), true);
    return;
  }
  if (location.hash !== `#/loan/${encodeURIComponent(loanId)}`) return;
  const { loan, timeline } = data;
  const newestAlert = loan?.open_alerts?.find((a) => a.location) || null;
  $("loan-side").replaceChildren(
    loan ? h("dl", { class: "facts" }, loanFacts(loan).map(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, v)]))
      : h("p", { class: "muted" }, t("loan.unknown")),
    h("h3", {}, t("timeline")),
    timelineList(timeline, loan?.timezone));
  await drawMap("loan-map", { ...data, alert: newestAlert });
}

// --- the overview (#/overview) -------------------------------------------------------------------

function duration(seconds) {
  if (seconds == null) return "—";
  return age(new Date(Date.now() - seconds * 1000).toISOString());
}

function figure(key, value, label, extra = "") {
  return h("div", { class: `figure ${extra}` },
    h("span", { class: "figure-value", "data-figure": key }, String(value)),
    h("span", { class: "figure-label" }, label));
}

function bar(value, max, cls = "") {
  const fill = h("span", { class: cls });
  fill.style.width = `${max ? Math.round((100 * value) / max) : 0}%`;
  return h("span", { class: "hbar", "aria-hidden": "true" }, fill);
}

async function showOverview() {
  $("app").hidden = true;
  $("loan-view").hidden = true;
  const view = $("overview");
  view.hidden = false;
  let o;
  // Failures are read from Kafka (dead letters, deliveries), not from the view: they fill in
  // when they come, and when unavailable the rest still shows.
  const failures = api("/v1/overview/failures").catch(() => null);
  try {
    o = await api("/v1/overview?days=14");
  } catch (err) {
    toast(t("err.load", { msg: err.message }), true);
    return;
  }
  if (location.hash !== "#/overview") return;
  const sev = ["critical", "warning", "info"];
  const maxDay = Math.max(1, ...o.per_day.map((d) => d.count));
  const maxRule = Math.max(1, ...o.open_by_rule.map((r) => r.count));
  view.replaceChildren(
    h("h1", { id: "overview-title", tabindex: "-1" }, t("ov.title")),
    h("p", { class: "muted" }, t("ov.generated", { when: when(o.generated_at, o.timezone) })),
    h("section", { class: "cards", "aria-label": t("ov.open") },
      figure("open-total", o.open_total, t("ov.open"), "big"),
      sev.map((s) => figure(`open-${s}`, o.open_by_severity[s], t(`severity.${s}`), s)),
      ["firing", "acknowledged", "silenced"].map((s) => figure(`status-${s}`, o.open_by_status[s], t(`status.${s}`))),
      figure("ack-p50", duration(o.time_to_ack.p50_s), t("ov.ack.p50")),
      figure("ack-p90", duration(o.time_to_ack.p90_s), t("ov.ack.p90")),
      figure("ack-count", o.time_to_ack.count, t("ov.ack.count", { days: o.days }))),
    h("h2", {}, t("ov.signals")),
    h("section", { class: "cards" },
      ["out_of_region", "offline", "at_risk_place", "overdue", "unreachable"].map((k) =>
        figure(`signal-${k}`, o.loans_by_signal[k], t(`ov.signal.${k}`)))),
    h("p", { class: "muted small" }, t("ov.signals.note")),
    h("section", { id: "ov-failures", "aria-busy": "true" }, h("h2", {}, t("ov.failures"))),
    h("div", { class: "ov-grid" },
      h("section", {},
        h("h2", {}, t("ov.per_day", { days: o.days })),
        h("ol", { class: "days", "aria-label": t("ov.per_day", { days: o.days }) }, o.per_day.map((d) => {
          const column = h("span", { class: "day-bar" });
          column.style.height = `${Math.round((100 * d.count) / maxDay)}%`;
          return h("li", { title: `${d.date}: ${d.count}` },
            h("span", { class: "day-count", "data-day": d.date }, String(d.count)),
            h("span", { class: "day-track" }, column),
            h("span", { class: "day-label" }, d.date.slice(5)));
        }))),
      h("section", {},
        h("h2", {}, t("ov.by_rule")),
        o.open_by_rule.length
          ? h("table", { class: "grid compact" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("fact.rule")), h("th", { scope: "col", class: "num" }, t("ov.count")))),
            h("tbody", {}, o.open_by_rule.map((r) => h("tr", {},
              h("td", {}, ruleTitle(r.rule_id, r.rule_id), h("span", { class: "sub mono" }, r.rule_id)),
              h("td", { class: "num", "data-rule": r.rule_id }, bar(r.count, maxRule), String(r.count))))))
          : h("p", { class: "muted" }, t("empty")))),
    h("h2", {}, t("ov.worst")),
    o.worst_loans.length
      ? h("table", { class: "grid compact" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, t("col.loan")), h("th", { scope: "col", class: "num" }, t("col.risk")),
          h("th", { scope: "col" }, t("col.severity")), h("th", { scope: "col" }, t("fact.rule")),
          h("th", { scope: "col", class: "num" }, t("loan.open_alerts")))),
        h("tbody", {}, o.worst_loans.map((w) => h("tr", {},
          h("td", { class: "mono" }, h("a", { href: `#/loan/${encodeURIComponent(w.loan_id)}` }, w.loan_id)),
          h("td", { class: "num" }, riskCell(w.risk_score)),
          h("td", {}, h("span", { class: `badge ${w.severity}` }, t(`severity.${w.severity}`))),
          h("td", {}, ruleTitle(w.rule_id, w.rule_id)),
          h("td", { class: "num" }, String(w.open_alerts))))))
      : h("p", { class: "muted" }, t("empty")));
  $("overview-title").focus();
  const f = await failures;
  const section = $("ov-failures");
  if (section && location.hash === "#/overview") {
    section.replaceChildren(...failuresSection(f).filter(Boolean));
    section.removeAttribute("aria-busy");
  }
}

/** Dead letters by reason and failed notification deliveries (GET /v1/overview/failures). */
function failuresSection(f) {
  if (!f) return [h("h2", {}, t("ov.failures")), h("p", { class: "muted", id: "failures-unavailable" }, t("ov.failures.none"))];
  const d = f.deliveries;
  const reasons = Object.entries(f.dead_letters.by_reason);
  return [
    h("h2", {}, t("ov.failures")),
    h("section", { class: "cards", "aria-label": t("ov.failures") },
      figure("deadletter-24h", f.dead_letters.last_24h, t("ov.dl.24h")),
      figure("deadletter-total", f.dead_letters.total, t("ov.dl.total")),
      figure("delivery-dead-24h", d.dead.last_24h, t("ov.dd.24h"), d.dead.last_24h ? "critical" : ""),
      figure("delivery-dead", d.dead.total, t("ov.dd.total")),
      figure("delivery-failed", d.failed.total, t("ov.df.total")),
      figure("delivery-pending", d.pending, t("ov.dp"))),
    reasons.length
      ? h("table", { class: "grid compact", "aria-label": t("ov.dl.by_reason") },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("ov.dl.reason")),
          h("th", { scope: "col", class: "num" }, t("ov.dl.24h")), h("th", { scope: "col", class: "num" }, t("ov.dl.total")))),
        h("tbody", {}, reasons.map(([reason, c]) => h("tr", {},
          h("td", { class: "mono" }, reason),
          h("td", { class: "num", "data-reason-24h": reason }, String(c.last_24h)),
          h("td", { class: "num", "data-reason": reason }, String(c.total))))))
      : null,
  ];
}

// --- risk places (#/places) ----------------------------------------------------------------------

function showPlaces() {
  $("app").hidden = true;
  $("loan-view").hidden = true;
  $("overview").hidden = true;
  const view = $("places");
  view.hidden = false;
  state.placesPage = mountPlaces(view, {
    api, apiRaw, h, toast, config: state.config, isAdmin: state.role === "admin",
  });
  $("places-title").focus();
}

function route(force = false) {
  if (!state.token) return;
  // The places page already showing stays as it is (its map, a drawing in progress) unless the
  // language changed: sign-in routes once more after loading, which would mount it again.
  if (!force && location.hash === "#/places" && state.placesPage) return;
  const match = location.hash.match(/^#\/loan\/(.+)$/);
  dropMap("loan-map");
  state.placesPage?.destroy();
  state.placesPage = null;
  $("places").hidden = true;
  for (const link of document.querySelectorAll(".nav a")) {
    link.setAttribute("aria-current", String(link.getAttribute("href") === (location.hash || "#/")
      || (link.getAttribute("href") === "#/" && !!match)));
  }
  if (match) {
    $("overview").hidden = true;
    showLoanView(decodeURIComponent(match[1]));
  } else if (location.hash === "#/overview") {
    showOverview();
  } else if (location.hash === "#/places") {
    showPlaces();
  } else {
    $("loan-view").hidden = true;
    $("overview").hidden = true;
    $("app").hidden = false;
  }
}

// --- who am I -----------------------------------------------------------------------------------

function canAct() {
  return state.role === "operator" || state.role === "admin";
}

// --- wiring ----------------------------------------------------------------------------------

async function loadConfig() {
  try {
    state.config = await (await fetch("/static/config.json")).json();
  } catch {
    state.config = { tiles_url: "", tiles_crs: "wgs84" };
  }
}

function init() {
  setLang(lang());
  translatePage();
  $("lang").textContent = t("lang.switch");
  $("lang").addEventListener("click", () => {
    setLang(lang() === "zh-CN" ? "en" : "zh-CN");
    applyLanguage();
  });
  setLive("off");
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (token) signIn(token);
    else $("login-error").textContent = t("login.empty");
  });
  $("signout").addEventListener("click", () => signOut());
  for (const id of ["f-status", "f-severity", "q-rule", "q-assignee", "q-label", "q-age", "q-sort"]) {
    $(id).addEventListener("change", reload);
  }
  let typing;
  $("f-loan").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(reload, 300); });
  $("more").addEventListener("click", loadMore);
  document.addEventListener("keydown", onQueueKey);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.selected) closePanel();
  });
  window.addEventListener("hashchange", route);
  setInterval(refreshAges, 30_000);
  loadConfig().then(() => {
    if (state.token) signIn(state.token);
    else showLogin();
  });
}

init();
