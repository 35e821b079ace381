// The map of one loan (Leaflet, vendored: window.L from /static/vendor/leaflet/leaflet.js).
//
// Draws the recent track with a replay slider, the home region, risk places nearby, the alert's
// location, each tracker's last position (age, fix type, a nominal accuracy circle for non-GPS
// fixes) and resident points when the loan carries them. Every layer is an SVG path with a
// `sw-*` class, so what is drawn can be checked in the DOM. Without reachable tiles the layers
// are drawn on the plain background all the same.
//
// Positions are WGS-84. Chinese tile providers (AutoNavi/Gaode, Tencent) draw GCJ-02, which is
// shifted by up to ~700 m; with `tiles_crs: gcj02` every position is shifted before drawing.

import { t, age, when } from "./i18n.js";

// --- WGS-84 -> GCJ-02 (the published "Mars coordinates" transform; identity outside China) ----

const A = 6378245.0;
const EE = 0.00669342162296594323;

function outOfChina(lat, lon) {
  return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271;
}

function shiftLat(x, y) {
  let r = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  r += ((20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2) / 3;
  r += ((20 * Math.sin(y * Math.PI) + 40 * Math.sin((y / 3) * Math.PI)) * 2) / 3;
  r += ((160 * Math.sin((y / 12) * Math.PI) + 320 * Math.sin((y * Math.PI) / 30)) * 2) / 3;
  return r;
}

function shiftLon(x, y) {
  let r = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  r += ((20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2) / 3;
  r += ((20 * Math.sin(x * Math.PI) + 40 * Math.sin((x / 3) * Math.PI)) * 2) / 3;
  r += ((150 * Math.sin((x / 12) * Math.PI) + 300 * Math.sin((x / 30) * Math.PI)) * 2) / 3;
  return r;
}

export function wgs84ToGcj02(lat, lon) {
  if (outOfChina(lat, lon)) return [lat, lon];
  let dLat = shiftLat(lon - 105, lat - 35);
  let dLon = shiftLon(lon - 105, lat - 35);
  const radLat = (lat / 180) * Math.PI;
  let magic = Math.sin(radLat);
  magic = 1 - EE * magic * magic;
  const sqrtMagic = Math.sqrt(magic);
  dLat = (dLat * 180) / (((A * (1 - EE)) / (magic * sqrtMagic)) * Math.PI);
  dLon = (dLon * 180) / ((A / sqrtMagic) * Math.cos(radLat) * Math.PI);
  return [lat + dLat, lon + dLon];
}

// The inverse, for a point picked on GCJ-02 tiles (drawing a risk place): two fixed-point steps,
// well under a metre.
export function gcj02ToWgs84(lat, lon) {
  let [wLat, wLon] = [lat, lon];
  for (let i = 0; i < 2; i += 1) {
    const [gLat, gLon] = wgs84ToGcj02(wLat, wLon);
    wLat -= gLat - lat;
    wLon -= gLon - lon;
  }
  return [wLat, wLon];
}

// Nominal accuracy of a fix type, metres (trackers report no radius).
const ACCURACY_M = { gps: 0, wifi: 50, lbs: 1000, none: 0 };
const PLACE_COLOURS = {
  second_pledge_lot: "#b42318", pawn_shop: "#a15c07", used_car_market: "#7a2e98",
  impound_lot: "#175cd3", scrapyard: "#475467",
};
const DEVICE_COLOURS = ["#1d4ed8", "#0e9384", "#c11574", "#6941c6"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const text = (value) => el("span", {}, String(value));

/**
 * Build the map block into `container`. `data`: {config, loan, track, places, alert}; any may be
 * null. Returns {destroy} (call before the container is thrown away).
 */
export function mountMap(container, data) {
  const { config, loan, track, places, alert } = data;
  const L = window.L;
  const gcj = config?.tiles_crs === "gcj02";
  const ll = (lat, lon) => (gcj ? wgs84ToGcj02(lat, lon) : [lat, lon]);
  const tz = loan?.timezone || "Asia/Shanghai";

  const mapEl = el("div", { class: "map", role: "region", "aria-label": t("map.label") });
  const notiles = el("p", { class: "muted map-note", hidden: true }, t("map.notiles"));
  const legend = el("ul", { class: "legend", "aria-label": t("map") });
  const play = el("button", { class: "btn", type: "button", "aria-pressed": "false" }, t("map.play"));
  const slider = el("input", { type: "range", min: "0", max: "0", value: "0", step: "1", "aria-label": t("map.slider") });
  const cursorText = el("output", { class: "cursor-text", "aria-live": "off" });
  const replay = el("div", { class: "replay" }, play, slider, cursorText);
  const lastList = el("ul", { class: "lastpos", "aria-label": t("map.last") });
  container.replaceChildren(mapEl, replay, notiles, legend, lastList);

  const map = L.map(mapEl, { zoomControl: true, attributionControl: true, preferCanvas: false });
  if (config?.tiles_url) {
    const tiles = L.tileLayer(config.tiles_url, {
      attribution: config.tiles_attribution || "", maxZoom: 19, subdomains: "1234",
    });
    let failures = 0;
    tiles.on("tileerror", () => {
      failures += 1;
      if (failures === 1) { notiles.hidden = false; mapEl.classList.add("no-tiles"); }
    });
    tiles.addTo(map);
  } else {
    mapEl.classList.add("no-tiles");
  }

  const bounds = [];
  const counts = {};
  const count = (key, n = 1) => { counts[key] = (counts[key] || 0) + n; };

  // Home region.
  const home = loan?.home_region;
  if (home) {
    const style = { className: "sw-home", color: "#067647", weight: 2, fillOpacity: 0.06, dashArray: "6 4" };
    let layer = null;
    if (home.center) {
      layer = L.circle(ll(home.center[0], home.center[1]), { ...style, radius: home.radius_km * 1000 });
    } else if (home.type === "Polygon" || home.type === "MultiPolygon") {
      const polygons = home.type === "Polygon" ? [home.coordinates] : home.coordinates;
      layer = L.polygon(polygons.map((rings) => rings.map((ring) => ring.map(([lon, lat]) => ll(lat, lon)))), style);
    }
    if (layer) {
      layer.bindTooltip(text(t("map.home"))).addTo(map);
      count("home");
    }
  }

  // Risk places.
  for (const place of places || []) {
    const colour = PLACE_COLOURS[place.kind] || "#475467";
    const label = text(`${place.name} · ${t(`place.${place.kind}`)}`);
    // The place's real extent, and a marker that stays visible when zoomed out.
    const style = { className: `sw-place sw-place-${place.kind}`, color: colour, weight: 2, fillOpacity: 0.2 };
    (place.polygon
      ? L.polygon(place.polygon.map(([lat, lon]) => ll(lat, lon)), style)
      : L.circle(ll(place.lat, place.lon), { radius: place.radius_m, ...style })
    ).bindTooltip(label).addTo(map);
    L.circleMarker(ll(place.lat, place.lon), {
      radius: 5, className: "sw-place-marker", color: colour, weight: 2, fillColor: "#ffffff", fillOpacity: 1,
    }).bindTooltip(label).addTo(map);
    count("places");
  }

  // Track, one line per tracker; replay over the tracker with the most fixes.
  const fixes = track?.fixes || [];
  const byDevice = new Map();
  for (const f of fixes) {
    if (!byDevice.has(f.device_id)) byDevice.set(f.device_id, []);
    byDevice.get(f.device_id).push(f);
  }
  const devices = [...byDevice.keys()].sort();
  devices.forEach((device, i) => {
    const points = byDevice.get(device).map((f) => ll(f.lat, f.lon));
    L.polyline(points, {
      className: "sw-track", color: DEVICE_COLOURS[i % DEVICE_COLOURS.length], weight: 3, opacity: 0.45,
    }).addTo(map);
    bounds.push(...points);
  });
  if (fixes.length) count("track", fixes.length);
  const replayed = devices.length
    ? byDevice.get(devices.reduce((a, b) => (byDevice.get(b).length > byDevice.get(a).length ? b : a)))
    : [];

  // Alert location.
  if (alert?.location) {
    const p = ll(alert.location.lat, alert.location.lon);
    L.circleMarker(p, { className: "sw-alert", radius: 9, color: "#b42318", weight: 3, fillOpacity: 0.35 })
      .bindTooltip(text(t("map.alert"))).addTo(map);
    bounds.push(p);
    count("alert");
  }

  // Last known position of each tracker.
  for (const f of track?.latest || []) {
    const p = ll(f.lat, f.lon);
    const tracker = t("map.tracker", { kind: t(f.device_kind) });
    const label = t("map.last.text", { tracker, fix: t(`fix.${f.fix}`), age: age(f.ts) });
    const accuracy = ACCURACY_M[f.fix] || 0;
    if (accuracy) {
      L.circle(p, { radius: accuracy, className: "sw-accuracy", color: "#475467", weight: 1, fillOpacity: 0.08 }).addTo(map);
    }
    L.circleMarker(p, {
      className: `sw-last sw-last-${f.device_kind}`, radius: 7, color: "#ffffff", weight: 2,
      fillColor: f.device_kind === "wired" ? "#1d4ed8" : "#0e9384", fillOpacity: 1,
    }).bindTooltip(text(`${label} (${when(f.ts, tz)})`)).addTo(map);
    lastList.append(el("li", { "data-device": f.device_id },
      el("span", { class: `swatch sw-swatch-last sw-swatch-${f.device_kind}`, "aria-hidden": "true" }),
      `${label} · ${when(f.ts, tz)} · ${f.lat.toFixed(5)}, ${f.lon.toFixed(5)}`));
    bounds.push(p);
    count("last");
  }

  // Resident points, when the loan exposes them: [{lat, lon, kind: "night"|"day", ...}].
  for (const r of loan?.resident_points || []) {
    const kind = r.kind === "night" ? "night" : "day";
    L.circleMarker(ll(r.lat, r.lon), {
      className: `sw-resident sw-resident-${kind}`, radius: 6, color: kind === "night" ? "#312e81" : "#b45309",
      weight: 2, fillOpacity: 0.6,
    }).bindTooltip(text(t(`map.resident.${kind}`))).addTo(map);
    count("resident");
  }

  // The replay cursor and the part already played.
  const played = L.polyline([], { className: "sw-played", color: "#1d4ed8", weight: 4, opacity: 0.95 }).addTo(map);
  const cursor = replayed.length
    ? L.circleMarker(ll(replayed[0].lat, replayed[0].lon), {
      className: "sw-cursor", radius: 7, color: "#1b1f24", weight: 2, fillColor: "#fde047", fillOpacity: 1,
    }).addTo(map)
    : null;
  slider.max = String(Math.max(0, replayed.length - 1));
  slider.disabled = replayed.length < 2;
  play.disabled = replayed.length < 2;

  function show(i) {
    if (!replayed.length) { cursorText.textContent = t("map.none"); return; }
    const f = replayed[i];
    cursor.setLatLng(ll(f.lat, f.lon));
    played.setLatLngs(replayed.slice(0, i + 1).map((x) => ll(x.lat, x.lon)));
    cursorText.textContent = t("map.cursor", {
      when: when(f.ts, tz), speed: f.speed_kmh == null ? "—" : Math.round(f.speed_kmh), fix: t(`fix.${f.fix}`),
    });
    slider.setAttribute("aria-valuetext", cursorText.textContent);
  }
  slider.addEventListener("input", () => show(Number(slider.value)));

  let timer = null;
  function stop() {
    clearInterval(timer);
    timer = null;
    play.textContent = t("map.play");
    play.setAttribute("aria-pressed", "false");
  }
  play.addEventListener("click", () => {
    if (timer) { stop(); return; }
    if (Number(slider.value) >= replayed.length - 1) slider.value = "0";
    const step = Math.max(1, Math.ceil(replayed.length / 200)); // a whole replay takes ~8 s
    play.textContent = t("map.pause");
    play.setAttribute("aria-pressed", "true");
    timer = setInterval(() => {
      const next = Math.min(replayed.length - 1, Number(slider.value) + step);
      slider.value = String(next);
      show(next);
      if (next >= replayed.length - 1) stop();
    }, 40);
  });
  show(0);

  // Legend (text, so it can be read without the map).
  const items = [
    ["track", "sw-swatch-track", t("map.window", { n: fixes.length })],
    ["home", "sw-swatch-home", t("map.home")],
    ["alert", "sw-swatch-alert", t("map.alert")],
    ["last", "sw-swatch-last", t("map.last")],
    ["places", "sw-swatch-place", `${t("map.places")} (${counts.places || 0})`],
    ["resident", "sw-swatch-resident", t("map.resident")],
  ].filter(([key]) => counts[key]);
  legend.replaceChildren(...items.map(([key, swatch, label]) =>
    el("li", { "data-layer": key }, el("span", { class: `swatch ${swatch}`, "aria-hidden": "true" }), label)));
  if (!fixes.length) legend.append(el("li", { class: "muted" }, t("map.none")));

  const fit = () => {
    map.invalidateSize();
    if (bounds.length) map.fitBounds(L.latLngBounds(bounds), { padding: [24, 24], maxZoom: 16 });
    else if (home?.center) map.setView(ll(home.center[0], home.center[1]), 10);
    else map.setView([35, 105], 4);
  };
  fit();
  requestAnimationFrame(fit);

  return {
    map,
    destroy() { stop(); map.remove(); },
  };
}
