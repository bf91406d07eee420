// The operator dashboard's page: live events (SSE), the network status every 2 s, per-site
// charts (uPlot) and the shipments' SLA countdown. Served by deploy/dashboard.py under a CSP
// that allows scripts from the dashboard only: no inline script, no CDN.
"use strict";

const eventsBox = document.getElementById("events");
let count = 0;
function text(value) { return value === undefined || value === null ? "" : String(value); }
function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function addEvent(e) {
  const line = document.createElement("div");
  line.className = "event";
  line.dataset.type = e.event_type;
  const time = text(e.occurred_at).replace("T", " ").slice(0, 19);
  const site = document.createElement("span");
  site.className = "site";
  site.textContent = e.site_id + " ";
  line.append(time + " ", site, text(e.summary));
  eventsBox.prepend(line);
  while (eventsBox.childNodes.length > 300) eventsBox.removeChild(eventsBox.lastChild);
  count += 1;
  document.getElementById("event-count").textContent = count;
}
// Every API answer 401 means the sign-in has ended: back to the identity provider.
async function api(path) {
  const reply = await fetch(path, { credentials: "same-origin" });
  if (reply.status === 401) { window.location.assign("/login"); throw new Error("signed out"); }
  if (!reply.ok) throw new Error((await reply.json()).error || reply.status);
  return reply.json();
}
api("/api/me").then((me) => {
  document.getElementById("who").textContent = (me.name || me.username) + " (" + me.roles.join(", ") + ")";
}).catch(() => {});
const source = new EventSource("/api/events");
const connection = document.getElementById("connection");
source.onopen = () => { connection.textContent = "live"; };
source.onerror = () => {
  connection.textContent = "reconnecting…";
  if (source.readyState === EventSource.CLOSED) {
    // refused: signed out (→ sign in) or every live stream in use (503; reload later)
    fetch("/api/me").then((reply) => {
      if (reply.status === 401) window.location.assign("/login");
      else connection.textContent = "not live: the dashboard refused the event stream (all streams in use?) — reload to retry";
    }).catch(() => {});
  }
};
source.addEventListener("signed-out", () => { source.close(); window.location.assign("/login"); });
source.addEventListener("dropped", (message) => {
  connection.textContent = "live (" + JSON.parse(message.data).dropped + " events skipped: this page fell behind)";
});
source.onmessage = (message) => addEvent(JSON.parse(message.data));

// ---- charts: per site, events/s, consumer lag and available stock by product (/api/charts) ----
const PALETTE = ["#12344d", "#2a9d8f", "#e76f51", "#8d5fd3", "#e9c46a", "#3a86ff", "#6b705c"];
const CHART_HEIGHT = 150;
const charts = {};  // site → {events, lag, inventory: uPlot, products, about}; tests read it
window.dashboardCharts = charts;
let chartWindow = [0, 1];  // [first, last] unix second shown: every chart the same minutes

function chartWidth(box) { return Math.max(200, box.clientWidth); }
function plot(box, title, series, legend = false) {
  return new uPlot({
    title, width: chartWidth(box), height: CHART_HEIGHT,
    scales: { x: { time: true, range: () => chartWindow }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    series: [{}, ...series],
    legend: { show: legend, live: false },  // the products named, not values under the cursor
  }, [[], ...series.map(() => [])], box);
}
function line(label, i) {
  const color = PALETTE[i % PALETTE.length];
  return { label, stroke: color, width: 1.5, fill: i === 0 ? color + "22" : undefined, spanGaps: false };
}
function siteRow(site) {
  const row = document.createElement("div");
  row.className = "site-charts";
  row.dataset.site = site;
  const about = document.createElement("div");
  about.className = "about";
  const name = document.createElement("div");
  name.className = "site";
  name.textContent = site;
  const facts = document.createElement("div");
  facts.className = "muted";
  about.append(name, facts);
  row.append(about);
  const boxes = [0, 1, 2].map(() => {
    const box = document.createElement("div");
    box.className = "chart";
    row.append(box);
    return box;
  });
  document.getElementById("site-charts").append(row);
  return { row, boxes, facts, products: null, inventory: null,
    events: plot(boxes[0], "events/s", [line("events/s", 0)]),
    lag: plot(boxes[1], "consumer lag (records)", [line("lag", 1)]) };
}
function drawCharts(series, statusBySite) {
  const holder = document.getElementById("site-charts");
  if (holder.classList.contains("muted")) { holder.classList.remove("muted"); holder.textContent = ""; }
  document.getElementById("window").textContent = Math.round(series.window_s / 60);
  chartWindow = [series.now - series.window_s, series.now];
  for (const [site, s] of Object.entries(series.sites)) {
    const c = charts[site] || (charts[site] = siteRow(site));
    c.events.setData(s.events);
    c.lag.setData(s.lag);
    const products = s.inventory.products.join(",");
    if (c.products !== products) {  // a new product: new series, so a new chart
      if (c.inventory) c.inventory.destroy();
      c.inventory = plot(c.boxes[2], "available by product", s.inventory.products.map(line), true);
      c.products = products;
    }
    c.inventory.setData(s.inventory.data);
    const st = statusBySite[site];
    c.facts.textContent = st ? (st.shipments_in_transit || 0) + " in transit · " +
      (st.shipments_at_risk || 0) + " at risk · lag " + (st.consumer_lag || 0) : "";
  }
}
window.addEventListener("resize", () => {
  for (const c of Object.values(charts)) {
    for (const [u, box] of [[c.events, c.boxes[0]], [c.lag, c.boxes[1]], [c.inventory, c.boxes[2]]]) {
      if (u) u.setSize({ width: chartWidth(box), height: CHART_HEIGHT });
    }
  }
});

// ---- shipments in transit: the time left before each one's SLA deadline (promised_at) ----
let skewMs = 0;  // the delivery service's clock minus this browser's, from the last status
function clock(seconds) {
  const s = Math.abs(Math.trunc(seconds));
  const hms = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  const shown = (hms[0] ? hms[0] + ":" + String(hms[1]).padStart(2, "0") : String(hms[1])) +
    ":" + String(hms[2]).padStart(2, "0");
  return seconds < 0 ? shown + " overdue" : shown;
}
function tick() {
  const now = Date.now() + skewMs;
  for (const td of document.querySelectorAll("#shipments td.countdown")) {
    const left = (Number(td.dataset.promised) - now) / 1000;
    td.dataset.leftS = String(Math.trunc(left));
    td.textContent = clock(left);
    td.className = "countdown " + (left < 0 ? "bad" : "");
  }
}
setInterval(tick, 1000);
// An order's trace id (OpenTelemetry across the network) belongs in the shipments' "trace"
// column: shown as soon as /api/status gives a shipment a `trace_id`; nothing provides it yet.
function traceOf(shipment) { return text(shipment.trace_id); }
function drawShipments(shipments) {
  const moving = shipments.filter((sh) => sh.status === "CREATED" || sh.status === "IN_TRANSIT");
  moving.sort((x, y) => Date.parse(x.promised_at) - Date.parse(y.promised_at));
  const traced = moving.some((sh) => traceOf(sh));
  document.querySelector("#shipments th.trace").hidden = !traced;
  const body = document.querySelector("#shipments tbody");
  body.innerHTML = "";
  for (const sh of moving) {
    const row = document.createElement("tr");
    row.dataset.shipment = sh.shipment_id;
    cell(row, sh.site_id, "site");
    cell(row, sh.shipment_id);
    cell(row, sh.order_id);
    cell(row, sh.status);
    cell(row, sh.custodian);
    cell(row, text(sh.promised_at).replace("T", " ").slice(0, 16));
    cell(row, "", "countdown").dataset.promised = String(Date.parse(sh.promised_at));
    const sla = sh.compromised ? "COMPROMISED" : sh.late ? "LATE" : sh.at_risk ? "AT RISK" : "on time";
    cell(row, sla, sla === "on time" ? "ok" : "bad");
    if (traced) cell(row, traceOf(sh));
    body.appendChild(row);
  }
  tick();
  const delivered = shipments.filter((sh) => sh.status === "DELIVERED");
  const late = delivered.filter((sh) => sh.late).length;
  document.getElementById("delivered").textContent = (moving.length ? "" : "none in transit. ") +
    (delivered.length ? delivered.length + " delivered (" + late + " late)" : "");
}

async function refresh() {
  try {
    const status = await api("/api/status");
    if (status.as_of) skewMs = Date.parse(status.as_of) - Date.now();
    document.getElementById("as-of").textContent = status.as_of ? "as of " + status.as_of : "";
    const body = document.querySelector("#inventory tbody");
    body.innerHTML = "";
    const bySite = {};
    for (const s of status.sites) {
      bySite[s.site_id] = s;
      const row = document.createElement("tr");
      row.className = "site-row";
      row.dataset.site = s.site_id;
      const inv = s.inventory_by_status || {};
      const products = Object.entries(s.inventory_by_product || {}).map(([p, n]) => p + ": " + n).join(", ");
      cell(row, s.site_id, "site");
      cell(row, inv.STORED || 0);
      cell(row, inv.RESERVED || 0);
      cell(row, inv.QUARANTINED || 0, inv.QUARANTINED ? "bad" : "");
      cell(row, inv.RECALLED || 0, inv.RECALLED ? "bad" : "");
      cell(row, products || "—");
      cell(row, s.open_orders || 0);
      cell(row, s.consumer_lag || 0);
      body.appendChild(row);
    }
    drawShipments(status.shipments);
    drawCharts(await api("/api/charts"), bySite);
    const alerts = [];
    for (const s of status.sites) {
      const q = Number((s.inventory_by_status || {}).QUARANTINED || 0);
      if (q) alerts.push(s.site_id + ": " + q + " unit(s) quarantined (excursion or QA hold)");
      const risky = Number(s.shipments_at_risk || 0);
      if (risky) alerts.push(s.site_id + ": " + risky + " shipment(s) at risk");
    }
    for (const u of status.untrusted || []) {
      alerts.push("UNTRUSTED: " + u.count + " record(s) claiming " + (u.claimed_site || "nobody") +
        " refused (" + u.reason + ") — dead-lettered, not applied");
    }
    for (const sh of status.shipments) if (sh.compromised) alerts.push("shipment " + sh.shipment_id + " compromised: " + sh.compromise_cause);
    for (const r of status.recalls) {
      const open = (r.unacknowledged_hospitals || []).join(", ");
      alerts.push("RECALL " + r.recall_id + " (" + r.trigger + ", " + r.subject + "): " +
        (r.unit_ids || []).length + " unit(s)" + (open ? "; not acknowledged by " + open : ""));
    }
    const box = document.getElementById("alerts");
    box.className = alerts.length ? "bad" : "muted";
    box.textContent = alerts.length ? "" : "none";
    for (const a of alerts) {
      const div = document.createElement("div");
      div.textContent = a;
      box.append(div);
    }
  } catch (error) {
    document.getElementById("as-of").textContent = "status unavailable: " + error;
  }
}
refresh();
setInterval(refresh, 2000);
