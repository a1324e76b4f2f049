// pvlm-web's page: the query box, chips, the results grid, paging, a track's detail and the upload box.
// Every value from the store reaches the page through textContent or an attribute, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { q: "", camera: "", since: "", until: "", page: 1, drop: [] };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function when(epoch) {
  if (epoch === null || epoch === undefined) return "unknown time";
  return new Date(epoch * 1000).toLocaleString();
}

// "first – last", the date written once when both fall on the same day
function span(first, last) {
  if (first === null || last === null || first === undefined || last === undefined) return when(first ?? last);
  const a = new Date(first * 1000), b = new Date(last * 1000);
  if (first === last) return when(first);
  if (a.toDateString() === b.toDateString()) {
    return `${a.toLocaleDateString()} ${a.toLocaleTimeString()} \u2013 ${b.toLocaleTimeString()}`;
  }
  return `${when(first)} \u2013 ${when(last)}`;
}

// The attributes as a short phrase list: "purple t-shirt", "blue trousers", "backpack", "walking", "front view"
function summary(a) {
  const out = [];
  const part = (color, shade, thing) => [shade, color, thing].filter((x) => x).join(" ");
  if (a.upper || a.upper_color) out.push(part(a.upper_color, a.upper_shade, a.upper || "top"));
  if (a.lower || a.lower_color) out.push(part(a.lower_color, a.lower_shade, a.lower || "bottoms"));
  if (a.shoes_color) out.push(`${a.shoes_color} shoes`);
  if (a.headwear) out.push(a.headwear);
  for (const item of Array.isArray(a.carrying) ? a.carrying : []) out.push(item);
  for (const k of ["posture", "gender", "age"]) if (a[k]) out.push(a[k]);
  if (a.view) out.push(`${a.view} view`);
  return out.filter((x) => typeof x === "string" || typeof x === "number").map(String);
}

// datetime-local (the browser's local time) <-> ISO 8601 UTC for the API
function toIso(local) { return local ? new Date(local).toISOString() : ""; }
function toLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
         `${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function readUrl() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  state.camera = p.get("camera") || "";
  state.since = p.get("since") || "";
  state.until = p.get("until") || "";
  state.page = Math.max(1, parseInt(p.get("page") || "1", 10) || 1);
  state.drop = p.getAll("drop");
  $("q").value = state.q;
  $("camera").value = state.camera;
  $("since").value = toLocal(state.since);
  $("until").value = toLocal(state.until);
}

function params() {
  const p = new URLSearchParams();
  p.set("q", state.q);
  if (state.camera) p.set("camera", state.camera);
  if (state.since) p.set("since", state.since);
  if (state.until) p.set("until", state.until);
  if (state.page > 1) p.set("page", String(state.page));
  for (const d of state.drop) p.append("drop", d);
  return p;
}

async function api(url, options) {
  const res = await fetch(url, { credentials: "same-origin", ...options });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

function chip(term, dropped) {
  const c = el("span", `chip ${term.role}${dropped ? " dropped" : ""}`);
  c.dataset.term = term.id;
  c.append(el("span", "label", term.label));
  const b = el("button", "x", dropped ? "+" : "\u00d7");
  b.type = "button";
  b.title = dropped ? `put "${term.label}" back` : `remove "${term.label}"`;
  b.setAttribute("aria-label", b.title);
  b.addEventListener("click", () => {
    state.drop = dropped ? state.drop.filter((d) => d !== term.id) : [...state.drop, term.id];
    state.page = 1;
    go();
  });
  c.append(b);
  return c;
}

function renderChips(query) {
  const box = $("chips");
  box.replaceChildren();
  for (const t of query.terms) box.append(chip(t, false));
  for (const t of query.dropped) box.append(chip(t, true));
  const fixes = Object.entries(query.corrections || {});
  if (fixes.length) box.append(el("span", "note", "corrected: " + fixes.map(([a, b]) => `${a} \u2192 ${b}`).join(", ")));
}

function attributeList(attrs) {
  const dl = el("dl", "attrs");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || (Array.isArray(v) && !v.length) || (typeof v === "object" && !Array.isArray(v))) continue;
    dl.append(el("dt", null, k.replace("_", " ")), el("dd", null, Array.isArray(v) ? v.join(", ") : v));
  }
  return dl;
}

function thumb(url, alt) {
  if (url) {
    const img = el("img", "thumb");
    img.src = url;
    img.alt = alt;
    img.loading = "lazy";
    return img;
  }
  const ph = el("div", "thumb placeholder", "no thumbnail");
  ph.setAttribute("role", "img");
  ph.setAttribute("aria-label", alt);
  return ph;
}

function card(hit) {
  const c = el("article", "card");
  c.tabIndex = 0;
  c.dataset.camera = hit.camera;
  c.dataset.track = hit.track;
  c.append(thumb(hit.thumb, `track ${hit.track} on ${hit.camera}`));
  const body = el("div", "body");
  body.append(el("p", "text", hit.text));
  const meta = el("p", "meta");
  meta.append(el("span", "camera", hit.camera), el("span", "track", `track ${hit.track}`));
  body.append(meta);
  const seen = el("p", "seen", span(hit.first_seen, hit.last_seen));
  seen.title = `${hit.first_seen_time || "?"} to ${hit.last_seen_time || "?"} (${hit.descriptions} description(s))`;
  body.append(seen);
  if (hit.alternative) {
    body.append(el("p", "alternative", `found in alternative ${hit.alternative.rank}: ${hit.alternative.text}`));
  }
  const m = el("p", "matched");
  const sure = hit.match_confidence || {};
  for (const label of hit.matched || []) {
    const p = sure[label];
    m.append(el("span", "tag", typeof p === "number" ? `${label} ${Math.round(p * 100)}%` : label));
  }
  m.append(el("span", "score", `score ${hit.score.toFixed(2)}`));
  body.append(m, el("p", "summary", summary(hit.attributes || {}).join(" \u00b7 ")));
  c.append(body);
  const open = () => openDetail(hit.camera, hit.track);
  c.addEventListener("click", open);
  c.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
  return c;
}

function renderResults(data) {
  renderChips(data.query);
  const grid = $("results");
  grid.replaceChildren(...data.hits.map(card));
  const n = data.total_capped ? `${data.total}+` : String(data.total);
  const what = data.total === 1 && !data.total_capped ? "track" : "tracks";
  $("status").textContent = `${n} ${what} \u00b7 ${data.took_ms} ms` + (data.hits.length ? "" : " \u00b7 nothing matches");
  $("pager").hidden = data.page === 1 && !data.more;
  $("prev").disabled = data.page <= 1;
  $("next").disabled = !data.more;
  $("pageinfo").textContent = `page ${data.page}`;
  window.pvlmRendered = performance.now();
}

async function search() {
  if (!state.q.trim()) return;
  $("status").textContent = "searching\u2026";
  try {
    renderResults(await api("/api/search?" + params().toString()));
  } catch (e) {
    $("results").replaceChildren();
    $("chips").replaceChildren();
    $("pager").hidden = true;
    $("status").textContent = e.message;
    $("status").classList.add("error");
    window.pvlmRendered = performance.now();
    return;
  }
  $("status").classList.remove("error");
}

function go() {
  history.pushState(null, "", "?" + params().toString());
  search();
}

async function openDetail(camera, track) {
  const dlg = $("detail");
  $("detail-title").textContent = `${camera} \u00b7 track ${track}`;
  const body = $("detail-body");
  body.replaceChildren(el("p", null, "loading\u2026"));
  if (!dlg.open) dlg.showModal();
  try {
    const data = await api(`/api/tracks/${encodeURIComponent(camera)}/${encodeURIComponent(track)}`);
    const list = el("ol", "descriptions");
    for (const d of data.descriptions) {
      const li = el("li");
      li.append(el("time", null, when(d.timestamp)), el("p", "text", d.text), attributeList(d.attributes));
      if (d.bundle) li.append(el("p", "bundle", `bundle ${d.bundle}`));
      list.append(li);
    }
    body.replaceChildren(thumb(data.thumb, `track ${track} on ${camera}`),
      el("p", "meta", `${data.descriptions.length} description(s), ${span(data.first_seen, data.last_seen)}`), list);
  } catch (e) {
    body.replaceChildren(el("p", "error", e.message));
  }
}

async function describeFile(file) {
  const out = $("described");
  out.replaceChildren(el("p", null, "describing\u2026"));
  try {
    const data = await api("/api/describe", { method: "POST", body: file,
      headers: { "Content-Type": file.type || "application/octet-stream" } });
    const use = el("button", null, "Search for this");
    use.type = "button";
    use.addEventListener("click", () => { $("q").value = data.text; $("search").requestSubmit(); });
    out.replaceChildren(el("p", "text", data.text || "(no description)"), attributeList(data.attributes),
      el("p", "meta", `${data.took_ms} ms`), use);
  } catch (e) {
    out.replaceChildren(el("p", "error", e.message));
  }
}

async function init() {
  readUrl();
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    state.q = $("q").value;
    state.camera = $("camera").value.trim();
    state.since = toIso($("since").value);
    state.until = toIso($("until").value);
    state.page = 1;
    state.drop = [];
    go();
  });
  $("prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); go(); });
  $("next").addEventListener("click", () => { state.page += 1; go(); });
  $("file").addEventListener("change", (e) => { if (e.target.files.length) describeFile(e.target.files[0]); });
  window.addEventListener("popstate", () => { readUrl(); search(); });
  search();
  api("/api/info").then((info) => { $("upload").hidden = !info.describe; }).catch(() => {});
  api("/api/cameras").then((data) => {
    $("cameras").replaceChildren(...data.cameras.map((c) => { const o = el("option"); o.value = c; return o; }));
  }).catch(() => {});
}

init();
