// groundplane dashboard: draws the snapshots GET /events streams (Server-Sent Events).
// Vanilla JavaScript, no dependencies; the coastlines come from /static/coastlines.json.
"use strict";

const COLORS = { online: "#3ecf8e", draining: "#f0a030", offline: "#e5484d", unknown: "#9aa3b5" };
let coastlines = [];
let latest = null;

function el(id) { return document.getElementById(id); }

function project(canvas, lat, lon) {
  return [((lon + 180) / 360) * canvas.width, ((90 - lat) / 180) * canvas.height];
}

function text(value) { return value === null || value === undefined || value === "" ? "—" : String(value); }

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const [key, value] of Object.entries(attrs || {})) tr.setAttribute(key, value);
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = text(cell);
    tr.appendChild(td);
  }
  return tr;
}

function drawMap(snap) {
  const canvas = el("map");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  // Graticule every 30°.
  ctx.strokeStyle = "#1d3150"; ctx.lineWidth = 1;
  for (let lon = -180; lon <= 180; lon += 30) {
    const [x] = project(canvas, 0, lon);
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); ctx.stroke();
  }
  for (let lat = -90; lat <= 90; lat += 30) {
    const [, y] = project(canvas, lat, 0);
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(canvas.width, y); ctx.stroke();
  }
  // Coastlines.
  ctx.strokeStyle = "#5b7aa6"; ctx.lineWidth = 1.1;
  for (const line of coastlines) {
    ctx.beginPath();
    for (let i = 0; i < line.length; i += 2) {
      const [x, y] = project(canvas, line[i + 1], line[i]);
      if (i === 0 || Math.abs(line[i] - line[i - 2]) > 180) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.stroke();
  }
  if (!snap) return;
  const sats = new Map(snap.satellites.map((s) => [s[0], s]));
  const stations = new Map(snap.stations.map((s) => [s.id, s]));
  const nodeState = new Map(snap.nodes.list.map((n) => [n.id, n.state]));
  const segment = (a, b) => {
    const [x1, y1] = project(canvas, a.lat, a.lon);
    const [x2, y2] = project(canvas, b[1], b[2]);
    if (Math.abs(x2 - x1) > canvas.width / 2) return; // across the antimeridian: not drawn
    ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
  };
  // Links up, then each station's route on top.
  ctx.strokeStyle = "rgba(62, 207, 142, 0.55)"; ctx.lineWidth = 1;
  for (const [stationId, satId] of snap.links_up) {
    const st = stations.get(stationId), sat = sats.get(satId);
    if (st && sat) segment(st, sat);
  }
  ctx.strokeStyle = "#ffd84d"; ctx.lineWidth = 2.5;
  for (const st of snap.stations) {
    const sat = st.routes_to ? sats.get(st.routes_to) : null;
    if (sat) segment(st, sat);
  }
  for (const sat of snap.satellites) {
    const [x, y] = project(canvas, sat[1], sat[2]);
    ctx.fillStyle = COLORS[nodeState.get(sat[0]) || "unknown"];
    ctx.beginPath(); ctx.arc(x, y, 3.2, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.font = "11px system-ui, sans-serif";
  for (const st of snap.stations) {
    const [x, y] = project(canvas, st.lat, st.lon);
    ctx.fillStyle = "#ffffff";
    ctx.beginPath(); ctx.moveTo(x, y - 6); ctx.lineTo(x - 5, y + 4); ctx.lineTo(x + 5, y + 4);
    ctx.closePath(); ctx.fill();
    ctx.fillStyle = "#d8e0ee"; ctx.fillText(st.id, x + 7, y + 4);
  }
}

function drawChart(points) {
  const canvas = el("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 26;
  ctx.clearRect(0, 0, w, h);
  const maxRate = Math.max(1, ...points.map((p) => p.rate));
  const maxMs = Math.max(1, ...points.map((p) => p.p95_ms || 0));
  const step = (w - 2 * pad) / Math.max(1, points.length);
  ctx.fillStyle = "#3a5a8c";
  points.forEach((p, i) => {
    const bh = (p.rate / maxRate) * (h - 2 * pad);
    ctx.fillRect(pad + i * step, h - pad - bh, Math.max(1, step - 1), bh);
  });
  for (const [key, color] of [["p50_ms", "#6cb6ff"], ["p95_ms", "#ff7eb6"]]) {
    ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.beginPath();
    let open = false;
    points.forEach((p, i) => {
      if (p[key] === null) { open = false; return; }
      const x = pad + i * step + step / 2, y = h - pad - (p[key] / maxMs) * (h - 2 * pad);
      if (open) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      open = true;
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#7d8aa3"; ctx.font = "10px system-ui, sans-serif";
  ctx.fillText(`${maxRate}/s`, 2, pad - 4);
  ctx.fillText(`${Math.round(maxMs)} ms`, w - 50, pad - 4);
  ctx.fillText("-60 s", pad, h - 8); ctx.fillText("now", w - pad - 18, h - 8);
}

function render(snap) {
  latest = snap;
  el("clock").textContent = snap.time.replace("T", " ").replace("Z", "");
  el("satellite-count").textContent = snap.satellite_count;
  el("station-count").textContent = snap.stations.length;
  el("link-count").textContent = snap.links_up.length;
  el("request-total").textContent = snap.requests_total;
  const sources = el("sources");
  sources.replaceChildren(...Object.entries(snap.sources).map(([name, up]) => {
    const span = document.createElement("span");
    span.className = up ? "ok" : "bad"; span.textContent = `${up ? "●" : "○"} ${name}`;
    return span;
  }));
  drawMap(snap);
  drawChart(snap.chart);
  const counts = snap.nodes.counts;
  el("node-counts").innerHTML = "";
  for (const state of ["online", "draining", "offline", "unknown"]) {
    const span = document.createElement("span");
    span.className = "stat"; span.style.marginRight = "12px";
    span.innerHTML = `<i class="dot ${state}"></i><b>${counts[state]}</b> ${state}`;
    el("node-counts").appendChild(span);
  }
  el("node-list").replaceChildren(...snap.nodes.list.map((n) => {
    const span = document.createElement("span");
    span.className = n.state; span.textContent = `${n.id} q${n.queue}`;
    span.title = `${n.id}: ${n.state}, queue ${n.queue}, in flight ${n.busy}`;
    return span;
  }));
  el("routes").replaceChildren(...snap.stations.map((s) => row([s.id, s.routes_to])));
  el("request-feed").replaceChildren(...snap.requests.map((r) => row(
    [r.time ? r.time.slice(11, 19) : null, r.request_id, r.code, r.satellite, r.station,
     r.latency_ms, r.tokens],
    { "data-request-id": r.request_id, class: r.code === "OK" ? "" : "bad" })));
  el("handoff-feed").replaceChildren(...snap.handoffs.map((e) => row(
    [e.time ? e.time.slice(11, 19) : null, `${e.kind} ${e.subject}`, e.state, e.from, e.to, e.path])));
  document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("open", () => {
    el("stream-state").textContent = "live"; el("stream-state").className = "ok";
  });
  source.addEventListener("error", () => {
    el("stream-state").textContent = "reconnecting…"; el("stream-state").className = "bad";
  });
  source.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
}

fetch("/static/coastlines.json")
  .then((response) => response.json())
  .then((data) => { coastlines = data.lines; drawMap(latest); })
  .catch(() => { coastlines = []; });
drawMap(null);
connect();
