// The node's dashboard: reads the admin API with the token the user signed
// in with (kept in this tab's sessionStorage only), every second.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("brink-token");
let tenant = null; // null: the operator
let previous = new Map(); // function -> [invocations, time]
let following = null; // the AbortController of the followed log
let timer = null;

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not a problem body */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "n";
  return td;
}

function bytes(n) {
  if (n == null) return "?";
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GiB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
  return n + " B";
}

async function signIn(event) {
  event.preventDefault();
  token = $("token").value.trim();
  $("signin-error").textContent = "";
  try {
    await api("/v1/node");
    sessionStorage.setItem("brink-token", token);
    await start();
  } catch (e) {
    token = null;
    $("signin-error").textContent = "Not signed in: " + e.message;
  }
}

function signOut() {
  sessionStorage.removeItem("brink-token");
  location.reload();
}

// Who the token is: the operator may list tenants; a tenant sees its own usage.
async function whoAmI() {
  try {
    await api("/v1/tenants");
    return null;
  } catch (e) {
    if (e.status !== 403) throw e;
  }
  const usage = await api("/v1/usage");
  return usage.usage.length ? usage.usage[0].tenant : "?";
}

async function start() {
  tenant = await whoAmI();
  $("who").textContent = tenant ? "tenant " + tenant : "operator";
  $("signin-panel").hidden = true;
  $("main").hidden = false;
  $("signout").hidden = false;
  await refresh();
  timer = setInterval(() => refresh().catch(showError), 1000);
}

function showError(e) {
  $("node-line").textContent = "update failed: " + e.message;
}

async function refresh() {
  const [stats, node] = await Promise.all([api("/v1/stats"), api("/v1/node")]);
  const versions = new Map();
  if (tenant) {
    for (const f of (await api("/v1/functions")).functions) {
      versions.set(tenant + "/" + f.name, f.active || "–");
    }
  }
  showFunctions(stats.functions, versions);
  showModels(stats.models, node.models);
  showNode(node);
  await showOutbox();
  await showKv();
}

function showFunctions(functions, versions) {
  const body = $("functions").querySelector("tbody");
  const now = performance.now();
  const names = new Set(functions.map((f) => f.function));
  for (const name of versions.keys()) {
    if (!names.has(name)) functions.push({ function: name, invocations: 0, errors: 0, queue_depth: 0 });
  }
  body.replaceChildren(...functions.map((f) => {
    const before = previous.get(f.function);
    const rate = before ? (f.invocations - before[0]) / ((now - before[1]) / 1000) : 0;
    previous.set(f.function, [f.invocations, now]);
    const tr = document.createElement("tr");
    tr.dataset.function = f.function;
    if (following && following.name === f.function) tr.className = "selected";
    const shown = tenant && f.function.startsWith(tenant + "/") ? f.function.slice(tenant.length + 1) : f.function;
    tr.append(
      cell(shown), cell(versions.get(f.function) || "–"),
      Object.assign(cell(Math.max(0, rate).toFixed(1), true), { className: "n rate" }),
      Object.assign(cell(String(f.invocations), true), { className: "n invocations" }),
      Object.assign(cell(String(f.errors), true), { className: "n errors" }),
      cell(f.p99_ms == null ? "–" : f.p99_ms.toFixed(2) + " ms", true),
      cell(String(f.queue_depth), true),
    );
    tr.addEventListener("click", () => follow(f.function, shown));
    return tr;
  }));
}

function showModels(models, placements) {
  const byName = new Map(models.map((m) => [m.model, m]));
  $("models").querySelector("tbody").replaceChildren(...placements.map((p) => {
    const m = byName.get(p.model) || { requests: 0, rejected: 0 };
    const where = cell(p.fallback ? p.device + " (FALLBACK: " + p.fallback + ")" : p.device);
    if (p.fallback) where.className = "fallback";
    const tr = document.createElement("tr");
    tr.append(cell(p.model), where, cell(String(m.requests), true), cell(String(m.rejected), true));
    return tr;
  }));
}

function showNode(node) {
  const m = node.machine;
  const gpus = node.accelerators.nvidia.gpus;
  $("node-line").textContent = "brink " + node.version + " on " + (m.hostname || "?") + ", up " + node.uptime_s + " s";
  const facts = [
    ["machine", m.cpus + " CPUs (" + (m.cpu_model || "?") + "), " + bytes(m.memory_available_bytes) + " free of " + bytes(m.memory_total_bytes)],
    ["disk", bytes(node.disk.free_bytes) + " free under " + node.disk.path],
    ["gpus", gpus.length ? gpus.map((g) => g.name).join(", ") : "none: " + (node.accelerators.nvidia.unavailable || "")],
    ["onnxruntime", node.accelerators.onnxruntime.loaded ? node.accelerators.onnxruntime.providers.join(", ") : node.accelerators.onnxruntime.note],
  ];
  $("node").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    return [dt, dd];
  }));
}

async function showOutbox() {
  let uplinks = [];
  try { uplinks = (await api("/v1/outbox")).uplinks; } catch (e) { if (e.status !== 404) throw e; }
  $("outbox").querySelector("tbody").replaceChildren(...uplinks.map((u) => {
    const tr = document.createElement("tr");
    tr.append(cell(u.uplink), cell(String(u.backlog_events), true), cell(bytes(u.backlog_bytes), true),
      cell(u.connected ? "yes" : "NO"), cell(String(u.parked_events), true));
    return tr;
  }));
}

async function showKv() {
  let usage;
  try { usage = (await api("/v1/usage")).usage; } catch (e) { if (e.status === 404) return; throw e; }
  if (!tenant) {
    $("kv").textContent = usage.map((u) => u.tenant + ": " + bytes(u.kv_bytes)).join(", ") || "no tenants";
    return;
  }
  const mine = usage.find((u) => u.tenant === tenant) || { kv_bytes: 0 };
  const record = await api("/v1/tenants/" + encodeURIComponent(tenant));
  $("kv").textContent = bytes(mine.kv_bytes) + " of " + record.quota.max_kv_mb + " MiB";
}

// Follows a function's log through the API's server-sent events, read with
// fetch so the token travels in a header, never in a URL.
async function follow(name, shown) {
  if (following) following.abort();
  const controller = new AbortController();
  controller.name = name;
  following = controller;
  $("log-function").textContent = shown;
  $("logs").textContent = "";
  if (!tenant) {
    $("logs").textContent = "(logs are the tenant's: sign in with its token)";
    return;
  }
  const response = await fetch("/v1/functions/" + encodeURIComponent(shown) + "/logs?follow=true", {
    headers: { Authorization: "Bearer " + token }, signal: controller.signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read().catch(() => ({ done: true }));
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data || !frame.includes("event: log")) continue;
      const record = JSON.parse(data);
      const line = new Date(record.time_unix_ms).toISOString().slice(11, 23) + " " + record.level.padEnd(5) + " " + record.message + "\n";
      $("logs").append(line);
      $("logs").scrollTop = $("logs").scrollHeight;
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  if (token) start().catch(() => { sessionStorage.removeItem("brink-token"); token = null; });
});
