// Risk places (#/places): list, search, and for admins draw (circle or polygon), edit, delete
// and import (CSV, GeoJSON) through /v1/places. Drawing uses Leaflet's own API: in circle mode a
// click on the map puts the centre (the radius comes from the form); in polygon mode each click
// adds a vertex, "Undo" takes the last one back. Changes go to Kafka through the API and reach
// the workers without a restart; the change log (admins) lists who changed what.

import { t, when } from "./i18n.js";
import { gcj02ToWgs84, wgs84ToGcj02 } from "./map.js";

const KINDS = ["second_pledge_lot", "pawn_shop", "used_car_market", "impound_lot", "scrapyard"];
const COLOURS = {
  second_pledge_lot: "#b42318", pawn_shop: "#a15c07", used_car_market: "#7a2e98",
  impound_lot: "#175cd3", scrapyard: "#475467",
};

/**
 * Render the page into `view`. `ctx`: {api, apiRaw, h, toast, config, isAdmin, isCurrent}.
 * Returns {destroy}.
 */
export function mountPlaces(view, ctx) {
  const { api, h, toast, config, isAdmin } = ctx;
  const L = window.L;
  const gcj = config?.tiles_crs === "gcj02";
  const ll = (lat, lon) => (gcj ? wgs84ToGcj02(lat, lon) : [lat, lon]);
  const fromMap = (latlng) => (gcj ? gcj02ToWgs84(latlng.lat, latlng.lng) : [latlng.lat, latlng.lng]);
  const round = (x) => Math.round(x * 1e6) / 1e6;

  let places = [];
  let editing = null; // null: not editing; {id|null, shape, centre, vertices}
  let drawn = null; // the layer being drawn

  const search = h("input", { id: "pl-q", type: "search", spellcheck: "false", "aria-label": t("pl.search") });
  search.placeholder = t("pl.search");
  const kindFilter = h("select", { id: "pl-kind", "aria-label": t("pl.kind") },
    h("option", { value: "" }, t("f.all")), KINDS.map((k) => h("option", { value: k }, t(`place.${k}`))));
  const count = h("span", { id: "pl-count", class: "muted", "aria-live": "polite" });
  const rows = h("tbody", { id: "pl-rows" });
  const mapEl = h("div", { id: "pl-map", class: "map", role: "region", "aria-label": t("pl.map") });
  const hint = h("p", { id: "pl-hint", class: "muted small", "aria-live": "polite" });
  const form = h("form", { id: "pl-form", class: "card pl-form", hidden: true, novalidate: true });
  const audit = h("section", { id: "pl-audit", class: "pl-audit" });

  const adminBar = isAdmin
    ? h("div", { class: "pl-actions" },
      h("button", { id: "pl-new-circle", class: "btn primary", type: "button", onclick: () => startEdit(null, "circle") }, t("pl.new.circle")),
      h("button", { id: "pl-new-polygon", class: "btn primary", type: "button", onclick: () => startEdit(null, "polygon") }, t("pl.new.polygon")),
      h("label", { class: "btn", for: "pl-file" }, t("pl.import")),
      h("input", { id: "pl-file", type: "file", accept: ".csv,.geojson,.json", class: "visually-hidden", onchange: (e) => importFile(e.target) }))
    : h("p", { class: "muted small" }, t("pl.readonly"));

  view.replaceChildren(
    h("h1", { id: "places-title", tabindex: "-1" }, t("pl.title")),
    h("p", { class: "muted small" }, t("pl.help")),
    h("div", { class: "pl-toolbar" },
      h("label", {}, h("span", {}, t("pl.search")), search),
      h("label", {}, h("span", {}, t("pl.kind")), kindFilter),
      count, adminBar),
    h("div", { class: "pl-grid" },
      h("div", { class: "pl-list table-wrap" },
        h("table", { class: "grid compact" },
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, t("pl.name")), h("th", { scope: "col" }, t("pl.kind")),
            h("th", { scope: "col" }, t("pl.shape")), h("th", { scope: "col" }, t("pl.source")),
            isAdmin ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, t("pl.actions"))) : null)),
          rows)),
      h("div", { class: "pl-side" }, h("div", { class: "map-block" }, mapEl), hint, form)),
    audit);

  const map = L.map(mapEl, { zoomControl: true, attributionControl: true });
  if (config?.tiles_url) {
    L.tileLayer(config.tiles_url, { attribution: config.tiles_attribution || "", maxZoom: 19, subdomains: "1234" })
      .on("tileerror", () => mapEl.classList.add("no-tiles"))
      .addTo(map);
  } else {
    mapEl.classList.add("no-tiles");
  }
  map.setView([30.66, 104.06], 11);
  mapEl.swMap = map; // for the browser tests: where a point is on the screen
  const layer = L.layerGroup().addTo(map);

  function shapeLayer(p, options) {
    if (p.polygon) return L.polygon(p.polygon.map(([a, b]) => ll(a, b)), options);
    return L.circle(ll(p.lat, p.lon), { radius: p.radius_m, ...options });
  }

  function drawPlaces() {
    layer.clearLayers();
    const bounds = [];
    for (const p of places) {
      if (editing && editing.id === p.id) continue;
      const colour = COLOURS[p.kind] || "#475467";
      const shape = shapeLayer(p, { className: `sw-place sw-place-${p.kind}`, color: colour, weight: 2, fillOpacity: 0.12 });
      shape.bindTooltip(h("span", {}, `${p.name} · ${t(`place.${p.kind}`)}`));
      shape.on("click", () => focusRow(p.id));
      shape.addTo(layer);
      bounds.push(ll(p.lat, p.lon));
    }
    return bounds;
  }

  function focusRow(id) {
    const row = rows.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (row) { row.scrollIntoView({ block: "nearest" }); row.querySelector("button, a")?.focus(); }
  }

  function renderRows() {
    count.textContent = t("pl.count", { n: places.length });
    rows.replaceChildren(...places.map((p) => h("tr", { "data-id": p.id },
      h("td", {}, h("button", { class: "link", type: "button", onclick: () => zoomTo(p) }, p.name),
        h("span", { class: "sub mono" }, p.id)),
      h("td", {}, dot(p.kind), t(`place.${p.kind}`)),
      h("td", {}, p.polygon ? t("pl.polygon.n", { n: p.polygon.length }) : t("pl.circle.r", { r: Math.round(p.radius_m) })),
      h("td", {}, t(`pl.source.${p.source}`), p.updated_by ? h("span", { class: "sub" }, `${p.updated_by} · ${when(p.updated_at)}`) : null),
      isAdmin ? h("td", { class: "pl-row-actions" },
        h("button", { class: "btn small", type: "button", "data-action": "edit", onclick: () => startEdit(p) }, t("pl.edit")),
        h("button", { class: "btn small danger", type: "button", "data-action": "delete", onclick: () => remove(p) }, t("pl.delete"))) : null)));
  }

  function dot(kind) {
    const span = h("span", { class: "pl-kind-dot", "aria-hidden": "true" });
    span.style.background = COLOURS[kind] || "#475467"; // CSSOM: the CSP refuses style attributes
    return span;
  }

  function zoomTo(p) {
    if (p.polygon) map.fitBounds(L.latLngBounds(p.polygon.map(([a, b]) => ll(a, b))), { padding: [24, 24], maxZoom: 17 });
    else map.setView(ll(p.lat, p.lon), 16);
  }

  async function load(fit = false) {
    const q = new URLSearchParams({ limit: "500" });
    if (search.value.trim()) q.set("q", search.value.trim());
    if (kindFilter.value) q.set("kind", kindFilter.value);
    try {
      places = (await api(`/v1/places?${q}`)).items;
    } catch (err) {
      toast(t("err.load", { msg: err.message }), true);
      return;
    }
    renderRows();
    const bounds = drawPlaces();
    // No animation: the first view is where drawing starts (an animated zoom still running would
    // move the map under the first clicks).
    if (fit && bounds.length) map.fitBounds(L.latLngBounds(bounds), { padding: [24, 24], maxZoom: 15, animate: false });
    if (isAdmin) loadAudit();
  }

  async function loadAudit() {
    let items = [];
    try {
      items = (await api("/v1/places/audit?limit=20")).items;
    } catch {
      return;
    }
    audit.replaceChildren(h("h2", {}, t("pl.audit")), items.length
      ? h("ol", { class: "timeline" }, items.map((a) => h("li", {},
        h("span", { class: "kind" }, t(`pl.action.${a.action}`)),
        h("div", {}, h("time", { datetime: a.at }, when(a.at)),
          ` ${a.actor} · `, h("span", { class: "mono" }, a.place_id),
          a.after ? ` → ${a.after.name} (${t(`place.${a.after.kind}`)})` : ""))))
      : h("p", { class: "muted" }, t("pl.audit.empty")));
  }

  // --- drawing and the form --------------------------------------------------------------------

  function redraw(syncInputs = true) {
    if (drawn) { drawn.remove(); drawn = null; }
    if (!editing) return;
    if (syncInputs) {
      const [latIn, lonIn, list] = ["#pl-f-lat", "#pl-f-lon", "#pl-f-vertices"].map((q) => form.querySelector(q));
      if (latIn && editing.centre) { [latIn.value, lonIn.value] = editing.centre.map(String); }
      if (list) list.value = editing.vertices.map(([a, b]) => `${a}, ${b}`).join("\n");
    }
    const kind = form.querySelector("#pl-f-kind").value;
    const style = { className: "sw-draft", color: COLOURS[kind] || "#475467", weight: 3, dashArray: "5 4", fillOpacity: 0.2 };
    if (editing.shape === "circle" && editing.centre) {
      const radius = Number(form.querySelector("#pl-f-radius").value) || 0;
      drawn = L.circle(ll(...editing.centre), { radius, ...style }).addTo(map);
    } else if (editing.shape === "polygon" && editing.vertices.length) {
      const points = editing.vertices.map(([a, b]) => ll(a, b));
      drawn = (points.length >= 3 ? L.polygon(points, style) : L.polyline(points, style)).addTo(map);
    }
    const n = editing.shape === "polygon" ? editing.vertices.length : (editing.centre ? 1 : 0);
    mapEl.dataset.vertices = String(n);
    hint.textContent = editing.shape === "circle"
      ? (editing.centre ? t("pl.hint.circle.moved") : t("pl.hint.circle"))
      : t("pl.hint.polygon", { n });
  }

  function field(id, label, input) {
    return h("label", { for: id }, h("span", {}, label), input);
  }

  function startEdit(place, shape = null) {
    editing = {
      id: place ? place.id : null,
      shape: place ? (place.polygon ? "polygon" : "circle") : shape,
      centre: place && !place.polygon ? [place.lat, place.lon] : null,
      vertices: place?.polygon ? place.polygon.map((v) => [...v]) : [],
    };
    const kind = h("select", { id: "pl-f-kind", onchange: () => redraw() },
      KINDS.map((k) => h("option", { value: k, selected: (place?.kind || "second_pledge_lot") === k }, t(`place.${k}`))));
    const name = h("input", { id: "pl-f-name", type: "text", required: true, maxlength: "200", value: place?.name || "" });
    const ident = h("input", { id: "pl-f-id", type: "text", spellcheck: "false", maxlength: "64", value: place?.id || "", disabled: !!place });
    const radius = h("input", { id: "pl-f-radius", type: "number", min: "10", max: "50000", step: "10", value: String(Math.round(place?.radius_m || 150)), oninput: () => redraw(false) });
    // Typed coordinates (keyboard users; a list pasted from elsewhere), kept in step with clicks.
    const fromCentreInputs = () => {
      const lat = Number(form.querySelector("#pl-f-lat").value);
      const lon = Number(form.querySelector("#pl-f-lon").value);
      const typed = form.querySelector("#pl-f-lat").value !== "" && form.querySelector("#pl-f-lon").value !== "";
      editing.centre = typed && Number.isFinite(lat) && Number.isFinite(lon) ? [lat, lon] : null;
      redraw(false);
    };
    const lat = h("input", { id: "pl-f-lat", type: "number", step: "any", min: "-90", max: "90", oninput: fromCentreInputs });
    const lon = h("input", { id: "pl-f-lon", type: "number", step: "any", min: "-180", max: "180", oninput: fromCentreInputs });
    const vertices = h("textarea", {
      id: "pl-f-vertices", rows: "4", spellcheck: "false",
      oninput: (e) => {
        editing.vertices = e.target.value.split("\n")
          .map((line) => line.split(/[,\s]+/).filter(Boolean).map(Number))
          .filter((pair) => pair.length === 2 && pair.every(Number.isFinite));
        redraw(false);
      },
    });
    form.replaceChildren(
      h("h2", {}, place ? t("pl.edit.title", { id: place.id }) : t(editing.shape === "circle" ? "pl.new.circle" : "pl.new.polygon")),
      field("pl-f-name", t("pl.name"), name),
      field("pl-f-kind", t("pl.kind"), kind),
      field("pl-f-id", t("pl.id"), ident),
      editing.shape === "circle" ? field("pl-f-radius", t("pl.radius"), radius) : null,
      editing.shape === "circle" ? h("div", { class: "pl-coords" }, field("pl-f-lat", t("pl.lat"), lat), field("pl-f-lon", t("pl.lon"), lon)) : null,
      editing.shape === "polygon" ? field("pl-f-vertices", t("pl.vertices"), vertices) : null,
      h("p", { id: "pl-f-error", class: "error", role: "alert" }),
      h("div", { class: "pl-form-actions" },
        h("button", { id: "pl-save", class: "btn primary", type: "submit" }, t("pl.save")),
        editing.shape === "polygon" ? h("button", { id: "pl-undo", class: "btn", type: "button", onclick: () => { editing.vertices.pop(); redraw(); } }, t("pl.undo")) : null,
        editing.shape === "polygon" ? h("button", { id: "pl-clear", class: "btn", type: "button", onclick: () => { editing.vertices = []; redraw(); } }, t("pl.clear")) : null,
        h("button", { id: "pl-cancel", class: "btn ghost", type: "button", onclick: stopEdit }, t("pl.cancel"))));
    form.hidden = false;
    mapEl.classList.add("drawing");
    drawPlaces();
    redraw();
    if (place) zoomTo(place);
    name.focus();
  }

  function stopEdit() {
    editing = null;
    form.hidden = true;
    mapEl.classList.remove("drawing");
    hint.textContent = "";
    redraw();
    drawPlaces();
  }

  map.on("click", (e) => {
    if (!editing) return;
    const point = fromMap(e.latlng).map(round);
    if (editing.shape === "circle") editing.centre = point;
    else editing.vertices.push(point);
    redraw();
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = form.querySelector("#pl-f-error");
    const body = {
      kind: form.querySelector("#pl-f-kind").value,
      name: form.querySelector("#pl-f-name").value.trim(),
    };
    const ident = form.querySelector("#pl-f-id").value.trim();
    if (!editing.id && ident) body.id = ident;
    if (editing.shape === "circle") {
      if (!editing.centre) { error.textContent = t("pl.err.centre"); return; }
      [body.lat, body.lon] = editing.centre;
      body.radius_m = Number(form.querySelector("#pl-f-radius").value);
    } else {
      if (editing.vertices.length < 3) { error.textContent = t("pl.err.vertices"); return; }
      body.polygon = editing.vertices;
    }
    try {
      const saved = editing.id
        ? await api(`/v1/places/${encodeURIComponent(editing.id)}`, { method: "PUT", body })
        : await api("/v1/places", { method: "POST", body });
      toast(t("pl.saved", { name: saved.name }));
      stopEdit();
      await load();
    } catch (err) {
      error.textContent = err.message;
    }
  });

  async function remove(place) {
    if (!window.confirm(t("pl.confirm.delete", { name: place.name }))) return;
    try {
      await api(`/v1/places/${encodeURIComponent(place.id)}`, { method: "DELETE" });
      toast(t("pl.deleted", { name: place.name }));
      await load();
    } catch (err) {
      toast(err.message, true);
    }
  }

  async function importFile(input) {
    const file = input.files?.[0];
    if (!file) return;
    const format = file.name.toLowerCase().endsWith(".csv") ? "csv" : "geojson";
    try {
      const result = await ctx.apiRaw(`/v1/places/import?format=${format}`, await file.text(),
        format === "csv" ? "text/csv" : "application/geo+json");
      toast(t("pl.imported", { created: result.created.length, updated: result.updated.length, unchanged: result.unchanged.length }));
      await load(true);
    } catch (err) {
      toast(t("pl.import.failed", { msg: err.message }), true);
    } finally {
      input.value = "";
    }
  }

  let typing;
  search.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => load(), 250); });
  kindFilter.addEventListener("change", () => load());
  requestAnimationFrame(() => map.invalidateSize());
  load(true);
  return { destroy() { map.remove(); } };
}
