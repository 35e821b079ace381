// skipwatch dashboard: lists alerts from /v1/alerts, follows /v1/alerts/stream, lets operators act.
//
// The live stream is read with fetch() rather than EventSource: EventSource cannot send an
// Authorization header, and a token in the URL ends up in proxy and browser logs. fetch sends the
// same header as every other call; this file parses the text/event-stream format itself and
// reconnects with backoff, re-listing alerts on every (re)connect so nothing is missed meanwhile.
// Every server value is put into the page as text (textContent), never as HTML.

const TOKEN_KEY = "skipwatch.token";
const SEVERITY_RANK = { critical: 2, warning: 1, info: 0 };
const OPEN = ["firing", "acknowledged"];
const PAGE = 200;
const STALL_MS = 45_000; // no bytes for this long (heartbeats come every 15 s): reconnect

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  alerts: new Map(),
  cursors: new Map(), // status -> next_cursor of the lists shown
  selected: null,
  stream: null, // AbortController of the running stream
  generation: 0, // bumps on every (re)list, so late answers of older lists are dropped
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

function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

const dateFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
});
const when = (iso) => (iso ? dateFormat.format(new Date(iso)) : "—");

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
  if (response.status === 401) signOut("Your token was not accepted. Sign in again.");
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// --- sign in / out ---------------------------------------------------------------------------

function showLogin(message = "") {
  $("app").hidden = true;
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
  setLive("off", "Offline");
  showLogin(message);
}

async function signIn(token) {
  state.token = token;
  try {
    await api("/v1/alerts?limit=1"); // checks the token (and that it may read alerts)
  } catch (err) {
    state.token = null;
    const message = err.status === 403 ? "This key may not read alerts (ingest-only key)."
      : err.status === 401 ? "Unknown token." : `Cannot reach the API: ${err.message}`;
    showLogin(message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  await reload();
  follow();
}

// --- listing ---------------------------------------------------------------------------------

function filters() {
  const status = $("f-status").value;
  return {
    statuses: status === "open" ? OPEN : [status],
    severity: $("f-severity").value,
    loan: $("f-loan").value.trim(),
  };
}

function matches(alert) {
  const f = filters();
  return f.statuses.includes(alert.status)
    && (!f.severity || alert.severity === f.severity)
    && (!f.loan || alert.loan_id === f.loan);
}

function listUrl(status, cursor) {
  const f = filters();
  const q = new URLSearchParams({ status, limit: String(PAGE) });
  if (f.severity) q.set("severity", f.severity);
  if (f.loan) q.set("loan", f.loan);
  if (cursor) q.set("cursor", cursor);
  return `/v1/alerts?${q}`;
}

async function reload() {
  const generation = ++state.generation;
  const { statuses } = filters();
  try {
    const pages = await Promise.all(statuses.map((s) => api(listUrl(s))));
    if (generation !== state.generation) return;
    state.alerts.clear();
    state.cursors.clear();
    pages.forEach((page, i) => {
      for (const alert of page.items) state.alerts.set(alert.id, alert);
      if (page.next_cursor) state.cursors.set(statuses[i], page.next_cursor);
    });
    render();
  } catch (err) {
    if (err.status !== 401) toast(`Could not load alerts: ${err.message}`, true);
  }
}

async function loadMore() {
  const generation = state.generation;
  const pending = [...state.cursors];
  const pages = await Promise.all(pending.map(([s, c]) => api(listUrl(s, c))));
  if (generation !== state.generation) return;
  pages.forEach((page, i) => {
    for (const alert of page.items) state.alerts.set(alert.id, alert);
    if (page.next_cursor) state.cursors.set(pending[i][0], page.next_cursor);
    else state.cursors.delete(pending[i][0]);
  });
  render();
}

function sorted() {
  return [...state.alerts.values()].sort((a, b) =>
    (SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity])
    || (Date.parse(b.started_at) - Date.parse(a.started_at))
    || a.id.localeCompare(b.id));
}

function riskCell(score) {
  const level = score >= 70 ? "high" : score < 40 ? "low" : "";
  return h("span", { class: "risk" },
    h("span", { class: `risk-bar ${level}`, "aria-hidden": "true" },
      h("span", { style: `width:${Math.min(100, Math.max(0, score))}%` })),
    String(score));
}

function row(alert) {
  const open = () => select(alert.id);
  return h("tr", {
    "data-id": alert.id,
    class: `sev-${alert.severity}`,
    "aria-selected": String(state.selected === alert.id),
    onclick: open,
  },
  h("td", {}, h("span", { class: `badge ${alert.severity}` }, alert.severity)),
  h("td", {},
    h("button", { class: "title-btn", type: "button", onclick: (e) => { e.stopPropagation(); open(); } },
      alert.title),
    h("span", { class: "sub mono" }, alert.rule_id)),
  h("td", { class: "mono nowrap" }, alert.loan_id),
  h("td", { class: "num" }, riskCell(alert.risk_score)),
  h("td", {}, h("span", { class: `status ${alert.status}` }, alert.status),
    alert.assigned ? h("span", { class: "sub" }, `→ ${alert.assigned.assignee}`) : null),
  h("td", { class: "age nowrap", title: when(alert.started_at), "data-started": alert.started_at },
    age(alert.started_at)));
}

function render(flashId = null) {
  const alerts = sorted();
  $("rows").replaceChildren(...alerts.map(row));
  $("empty").hidden = alerts.length > 0;
  $("more").hidden = state.cursors.size === 0;
  const count = (sev) => alerts.filter((a) => a.severity === sev).length;
  $("counts").replaceChildren(
    ...["critical", "warning", "info"].filter((sev) => count(sev) > 0).map((sev) =>
      h("span", { class: `badge ${sev}` }, `${count(sev)} ${sev}`)),
    h("span", { class: "count" }, `${alerts.length} shown`));
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
  if (matches(alert)) state.alerts.set(alert.id, alert);
  else state.alerts.delete(alert.id);
  render(alert.id);
  if (state.selected === alert.id) renderAlert(alert);
}

// --- live stream (fetch + text/event-stream parser) ------------------------------------------

function setLive(kind, text) {
  const el = $("live");
  el.dataset.state = kind;
  el.textContent = text;
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
    setLive("retry", "Reconnecting…");
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
    if (response.status === 401) { signOut("Your token was not accepted. Sign in again."); return; }
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
          setLive("on", "Live");
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
    toast(`Could not open the alert: ${err.message}`, true);
  }
}

function closePanel() {
  const id = state.selected;
  state.selected = null;
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
      h("div", {}, h("span", { class: "k" }, "Risk score"),
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
  const act = async (path, body, done) => {
    try {
      const updated = await api(`/v1/alerts/${encodeURIComponent(alert.id)}/${path}`, { method: "POST", body });
      upsert(updated);
      renderAlert(updated);
      toast(done);
    } catch (err) {
      toast(err.status === 403 ? "Your token is read-only: acting on alerts needs an operator." : err.message, true);
    }
  };
  const closed = alert.status === "resolved";
  const snooze = h("select", { "aria-label": "Snooze for" },
    h("option", { value: "60" }, "1 hour"), h("option", { value: "240" }, "4 hours"),
    h("option", { value: "1440" }, "1 day"), h("option", { value: "4320" }, "3 days"));
  const assignee = h("input", {
    type: "text", placeholder: "collector", "aria-label": "Assign to", size: "12",
    value: alert.assigned?.assignee || "",
  });
  return h("div", { class: "actions" },
    h("button", {
      class: "btn primary", type: "button", disabled: closed || alert.status === "acknowledged",
      onclick: () => act("ack", undefined, "Acknowledged"),
    }, "Acknowledge"),
    h("button", {
      class: "btn", type: "button", disabled: closed,
      onclick: () => act("resolve", undefined, "Resolved"),
    }, "Resolve"),
    h("form", {
      onsubmit: (e) => { e.preventDefault(); act("snooze", { minutes: Number(snooze.value) }, "Snoozed"); },
    }, snooze, h("button", { class: "btn", type: "submit", disabled: closed }, "Snooze")),
    h("form", {
      onsubmit: (e) => {
        e.preventDefault();
        if (assignee.value.trim()) act("assign", { assignee: assignee.value.trim() }, "Assigned");
      },
    }, assignee, h("button", { class: "btn", type: "submit" }, "Assign")));
}

function renderAlert(alert) {
  const panel = $("panel");
  const facts = [
    ["Status", h("span", { class: `status ${alert.status}` }, alert.status)],
    ["Loan", h("span", { class: "mono" }, alert.loan_id)],
    ["Rule", h("span", { class: "mono" }, alert.rule_id)],
    ["Risk score", String(alert.risk_score)],
    ["Started", `${when(alert.started_at)} (${age(alert.started_at)} ago)`],
    ["Updated", when(alert.updated_at)],
    alert.acknowledged && ["Acknowledged", `${alert.acknowledged.by}, ${when(alert.acknowledged.at)}`],
    alert.assigned && ["Assigned to", `${alert.assigned.assignee} (by ${alert.assigned.by})`],
    alert.silenced_until && ["Silenced until", when(alert.silenced_until)],
    alert.resolved && ["Resolved by", `${alert.resolved.by}, ${when(alert.resolved.at)}`],
    alert.location && ["Last position", `${alert.location.lat.toFixed(5)}, ${alert.location.lon.toFixed(5)}`],
  ].filter(Boolean);
  const existingLoan = panel.querySelector("#loan-section");
  panel.replaceChildren(
    h("div", { class: "panel-head" },
      h("div", {},
        h("span", { class: `badge ${alert.severity}` }, alert.severity),
        h("h2", { id: "panel-title", tabindex: "-1" }, alert.title)),
      h("button", { class: "btn ghost close", type: "button", "aria-label": "Close", onclick: closePanel }, "×")),
    h("p", { class: "summary" }, alert.summary),
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    actionBar(alert),
    h("h3", {}, "Evidence"),
    h("ul", { class: "evidence", "aria-label": "Evidence" }, alert.evidence.map(evidenceItem)),
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
        ? `${d.action} by ${d.by || "?"}${d.assignee ? ` → ${d.assignee}` : ""}: ${d.title}`
        : `${d.status} (${d.severity}): ${d.title}`;
    case "payment":
      return `${d.type.replaceAll("_", " ")} · #${d.installment_no} · ${d.amount} ${d.currency}`;
    case "contact":
      return `${d.channel} ${d.party.replaceAll("_", " ")} → ${d.outcome.replaceAll("_", " ")}`;
    case "ping":
      return `${d.lat.toFixed(4)}, ${d.lon.toFixed(4)}${d.speed_kmh != null ? ` · ${d.speed_kmh} km/h` : ""}`
        + (d.alarms?.length ? ` · alarms: ${d.alarms.join(", ")}` : "");
    default:
      return JSON.stringify(d);
  }
}

async function loadLoan(loanId, alertId) {
  let loan = null;
  let timeline = null;
  try {
    [loan, timeline] = await Promise.all([
      api(`/v1/loans/${encodeURIComponent(loanId)}`).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
      api(`/v1/loans/${encodeURIComponent(loanId)}/timeline?limit=50`).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
    ]);
  } catch (err) {
    toast(`Could not load the loan: ${err.message}`, true);
  }
  if (state.selected !== alertId) return;
  const section = $("loan-section");
  if (!section) return;
  const facts = loan ? [
    ["Borrower", loan.borrower ? `${loan.borrower.name} · ${loan.borrower.phone}` : "—"],
    ["Vehicle", loan.vehicle ? `${loan.vehicle.plate} · ${loan.vehicle.vin}` : "—"],
    ["Loan status", loan.status || "—"],
    ["Risk score", String(loan.risk_score)],
    ["Open alerts", String(loan.open_alerts.length)],
    ["Last event", when(loan.last_event_at)],
  ] : [];
  const items = timeline?.items || [];
  section.replaceChildren(
    h("h3", {}, `Loan ${loanId}`),
    loan ? h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))
      : h("p", { class: "muted" }, "The loan's registration has not been seen yet."),
    h("h3", {}, "Timeline"),
    items.length
      ? h("ol", { class: "timeline", "aria-label": "Loan timeline" }, items.map((e) =>
        h("li", {}, h("span", { class: `kind ${e.kind}` }, e.kind),
          h("div", {}, h("time", { datetime: e.ts }, when(e.ts)), timelineText(e)))))
      : h("p", { class: "muted" }, "Nothing recorded yet."));
}

// --- wiring ----------------------------------------------------------------------------------

function init() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (token) signIn(token);
    else $("login-error").textContent = "Enter a token.";
  });
  $("signout").addEventListener("click", () => signOut());
  for (const id of ["f-status", "f-severity"]) $(id).addEventListener("change", reload);
  let typing;
  $("f-loan").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(reload, 300); });
  $("more").addEventListener("click", loadMore);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.selected) closePanel();
  });
  setInterval(refreshAges, 30_000);
  if (state.token) signIn(state.token);
  else showLogin();
}

init();
