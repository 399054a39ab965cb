// branchbox dashboard: plain DOM, the same JSON API as ctl, live device
// states over server-sent events. Every value from the API is written as
// text, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

async function api(method, path, body, type) {
  const opts = { method, credentials: "same-origin", headers: { "X-Branchbox-UI": "1" } };
  if (body !== undefined) {
    opts.body = typeof body === "string" || body instanceof Blob ? body : JSON.stringify(body);
    opts.headers["Content-Type"] = type || "application/json";
  }
  const r = await fetch(path, opts);
  if (r.status === 401) { showLogin(); throw new Error("signed out"); }
  return r;
}

async function json(method, path, body) {
  const r = await api(method, path, body);
  const v = await r.json();
  if (!r.ok) throw new Error(problems(v));
  return v;
}

function problems(v) {
  return [v.error, ...(v.problems || [])].filter(Boolean).join("\n");
}

function when(t) {
  if (!t || t.startsWith("0001")) return "";
  return new Date(t).toLocaleString();
}

function showLogin() {
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-failed").hidden = !location.search.includes("login=failed");
}

// ---- devices, live ----

const devices = new Map();

function deviceRow(d) {
  const tr = el("tr", { className: "device", id: "dev-" + d.uuid });
  tr.dataset.state = d.state;
  const actions = el("td");
  if (d.state === "failed") {
    actions.append(el("button", { className: "retry", onclick: (e) => { e.stopPropagation(); retry(d.uuid); } }, "Retry"));
  }
  if (d.state !== "activated") {
    actions.append(el("button", { className: "otp", onclick: (e) => { e.stopPropagation(); createOTP(d.uuid); } }, "OTP"));
  }
  tr.append(
    el("td", {}, el("code", {}, d.uuid)), el("td", {}, d.site), el("td", {}, d.fqdn),
    el("td", {}, el("span", { className: "badge " + d.state }, d.state)), el("td", {}, d.amt_version),
    el("td", {}, when(d.updated)), el("td", { className: "err" }, d.last_error), actions);
  tr.onclick = () => showDevice(d.uuid);
  return tr;
}

function matches(d) {
  const f = $("#filter").value.trim().toLowerCase();
  return !f || [d.uuid, d.site, d.fqdn, d.state].some((x) => (x || "").toLowerCase().includes(f));
}

function upsertDevice(d) {
  devices.set(d.uuid, d);
  const row = deviceRow(d);
  row.hidden = !matches(d);
  const old = document.getElementById("dev-" + d.uuid);
  if (old) old.replaceWith(row); else $("#devices tbody").append(row);
  if (!$("#device-detail").hidden && $("#detail-title").dataset.uuid === d.uuid) showDevice(d.uuid);
}

function showCounts(c) {
  for (const s of ["seen", "activating", "activated", "failed"]) $("#count-" + s).textContent = c.states[s] || 0;
  $("#count-total").textContent = c.total;
  const pct = (n) => (c.total ? (100 * (n || 0)) / c.total : 0) + "%";
  $("#bar-activated").style.width = pct(c.states.activated);
  $("#bar-failed").style.width = pct(c.states.failed);
}

function live() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("snapshot", (e) => {
    const s = JSON.parse(e.data);
    $("#devices tbody").replaceChildren();
    devices.clear();
    s.devices.forEach(upsertDevice);
    showCounts(s.counts);
    $("#live").textContent = "live";
  });
  es.addEventListener("device", (e) => upsertDevice(JSON.parse(e.data)));
  es.addEventListener("counts", (e) => showCounts(JSON.parse(e.data)));
  es.onerror = () => { $("#live").textContent = "reconnecting…"; };
}

async function showDevice(uuid) {
  const d = await json("GET", "/api/v1/devices/" + uuid);
  const title = $("#detail-title");
  title.textContent = `${d.uuid} — ${d.state}${d.fqdn ? " — " + d.fqdn : ""}`;
  title.dataset.uuid = d.uuid;
  $("#detail-history").replaceChildren(...(d.history || []).map((h) =>
    el("tr", {}, el("td", {}, when(h.time)), el("td", {}, h.state), el("td", {}, h.step), el("td", {}, h.detail))));
  $("#device-detail").hidden = false;
}

async function retry(uuid) {
  try { await json("POST", `/api/v1/devices/${uuid}/retry`); } catch (e) { alert(e.message); }
}

async function createOTP(uuid) {
  try {
    const r = await json("POST", `/api/v1/devices/${uuid}/otp`, {});
    await showDevice(uuid);
    const p = $("#detail-otp");
    p.textContent = `One-time password (shown once, give it to the device's agent): ${r.otp} — expires ${when(r.expires)}`;
    p.hidden = false;
  } catch (e) { alert(e.message); }
}

// The import answers one JSON line per batch of rows, then the total.
async function importInventory(file) {
  const status = $("#inventory-status"), bar = $("#inventory-progress");
  status.textContent = `importing ${file.name}…`;
  bar.hidden = false; bar.value = 0;
  const r = await api("POST", "/api/v1/devices/import?progress=1", file, "text/csv");
  if (!r.ok) { status.textContent = problems(await r.json()); bar.hidden = true; return; }
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i); buf = buf.slice(i + 1);
      if (!line.trim()) continue;
      const m = JSON.parse(line);
      if (m.error) { status.textContent = problems(m); bar.hidden = true; return; }
      bar.max = m.total || 1; bar.value = m.done;
      status.textContent = m.imported !== undefined ? `imported ${m.imported} device(s)` : `imported ${m.done}/${m.total}`;
    }
  }
}

// ---- sites ----

async function loadSites() {
  const sites = await json("GET", "/api/v1/sites");
  const rows = await Promise.all(sites.map(async (s) => {
    let cert = "none", expires = "";
    if (s.has_provisioning_cert) {
      const r = await api("GET", `/api/v1/sites/${encodeURIComponent(s.name)}/cert`);
      if (r.ok) {
        const c = await r.json();
        const fails = c.results.filter((x) => x.status === "FAIL").map((x) => x.rule);
        cert = c.ok ? "passes every rule" : "FAILS " + fails.join(", ");
        expires = when(c.not_after);
      }
    }
    const tr = el("tr", { id: "site-" + s.name },
      el("td", {}, s.name), el("td", {}, s.domain), el("td", {}, s.subnet), el("td", {}, s.relay ? "relay" : s.interface),
      el("td", { className: "cert" }, cert), el("td", {}, expires), el("td", {}, s.accepts_agents ? "yes" : "no"),
      el("td", {},
        el("button", { onclick: () => downloadSetupBin(s.name) }, "setup.bin"),
        el("button", { onclick: () => openCertUpload(s.name) }, "Upload certificate")));
    return tr;
  }));
  $("#sites tbody").replaceChildren(...rows);
}

async function downloadSetupBin(site) {
  const r = await api("POST", `/api/v1/sites/${encodeURIComponent(site)}/setup.bin`, {});
  if (!r.ok) { alert(problems(await r.json())); return; }
  const a = el("a", { href: URL.createObjectURL(await r.blob()), download: `setup-${site}.bin` });
  document.body.append(a); a.click(); a.remove();
}

function openCertUpload(site) {
  $("#cert-site").textContent = site;
  $("#cert-upload").hidden = false;
  $("#cert-results").replaceChildren();
}

async function uploadCert() {
  const site = $("#cert-site").textContent;
  const [chain, key] = [$("#cert-chain").files[0], $("#cert-key").files[0]];
  if (!chain || !key) { alert("choose both the chain and the key"); return; }
  const r = await api("PUT", `/api/v1/sites/${encodeURIComponent(site)}/cert`, { chain_pem: await chain.text(), key_pem: await key.text() });
  const v = await r.json();
  const results = v.results || [];
  $("#cert-results").replaceChildren(
    el("li", {}, r.ok ? "stored" : "refused, nothing stored"),
    ...results.map((x) => el("li", { className: x.status }, `${x.status} ${x.rule}: ${x.reason}`)));
  if (!results.length && !r.ok) $("#cert-results").append(el("li", { className: "FAIL" }, problems(v)));
  if (r.ok) loadSites();
}

// ---- the other tabs ----

async function loadLeases() {
  const ls = await json("GET", "/api/v1/leases");
  $("#leases tbody").replaceChildren(...ls.map((l) => el("tr", {},
    el("td", {}, l.ip), el("td", {}, l.mac), el("td", {}, l.hostname), el("td", {}, l.site), el("td", {}, l.state), el("td", {}, when(l.expires)))));
}

async function loadCluster() {
  const ms = await json("GET", "/api/v1/cluster");
  $("#members tbody").replaceChildren(...ms.map((m) => el("tr", {},
    el("td", {}, m.id), el("td", {}, m.address), el("td", {}, m.leader ? "leader" : m.role), el("td", {}, m.voter ? "yes" : "no"))));
}

async function loadAudit() {
  const es = await json("GET", "/api/v1/audit?limit=200");
  $("#audit tbody").replaceChildren(...es.map((a) => el("tr", {},
    el("td", {}, String(a.seq)), el("td", {}, when(a.time)), el("td", {}, a.actor), el("td", {}, a.action), el("td", {}, a.subject), el("td", {}, a.detail))));
}

const loaders = { sites: loadSites, leases: loadLeases, cluster: loadCluster, audit: loadAudit };
let current = "devices";

function openTab(name) {
  current = name;
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== "tab-" + name; });
  if (loaders[name]) loaders[name]().catch((e) => console.error(e));
}

async function start() {
  const r = await fetch("/api/v1/status", { credentials: "same-origin" });
  if (r.status === 401) { showLogin(); return; }
  const st = await r.json();
  $("#node").textContent = `${st.node} · v${st.version} · ${st.role}${st.leader && st.leader !== st.node ? " (leader " + st.leader + ")" : ""}`;
  $("#login").hidden = true;
  $("#app").hidden = false;
  document.querySelectorAll("nav button").forEach((b) => { b.onclick = () => openTab(b.dataset.tab); });
  $("#filter").oninput = () => devices.forEach((d) => { document.getElementById("dev-" + d.uuid).hidden = !matches(d); });
  $("#inventory-file").onchange = (e) => { if (e.target.files[0]) importInventory(e.target.files[0]).catch((x) => { $("#inventory-status").textContent = x.message; }); };
  $("#cert-submit").onclick = () => uploadCert().catch((e) => alert(e.message));
  setInterval(() => { if (current !== "devices" && current !== "sites") loaders[current](); }, 5000);
  live();
}

start();
