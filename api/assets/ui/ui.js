// genq's dashboard: polls GET /admin/overview with the admin key kept in sessionStorage, draws the
// figures and two charts, and offers pause/resume and cancel. Text from jobs (prompts, results)
// only ever goes through textContent.
"use strict";

const POLL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;
// Workers report their token count with each heartbeat (every 5 s): rates are taken over this.
const RATE_SPAN_MS = 10000;

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("genq-key");
let timer = null;
const depth = [];
const totals = [];
const rates = [];

async function call(method, path) {
  const response = await fetch(path, { method, headers: { Authorization: `Bearer ${key}` } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.error ? body.error.message : response.statusText;
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");
const seconds = (s) => (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);

function chart(svg, points) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const ns = "http://www.w3.org/2000/svg";
  const now = Date.now();
  const max = Math.max(1, ...points.map((p) => p.value));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points
    .map((p) => `${600 - ((now - p.at) / WINDOW_MS) * 600},${115 - (p.value / max) * 105}`)
    .join(" "));
  svg.appendChild(line);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "12");
  label.textContent = `max ${Math.round(max)}`;
  svg.appendChild(label);
}

function keep(series, point) {
  series.push(point);
  while (series.length && series[0].at < point.at - WINDOW_MS) series.shift();
}

function tokenRate(now, total) {
  keep(totals, { at: now, value: total });
  const earlier = totals.find((p) => p.at >= now - RATE_SPAN_MS) || totals[0];
  if (!earlier || earlier.at === now) return 0;
  return Math.max(0, (total - earlier.value) / ((now - earlier.at) / 1000));
}

function drawWorkers(workers) {
  const body = $("workers");
  body.replaceChildren();
  for (const w of workers) {
    const row = body.insertRow();
    cell(row, w.name);
    cell(row, w.hostname);
    cell(row, w.model);
    cell(row, `${w.slots_busy} / ${w.slots}`);
    cell(row, String(w.jobs_running));
    cell(row, `${seconds(w.heartbeat_age_secs)} ago`);
  }
  if (!workers.length) cell(body.insertRow(), "No live worker.", "muted").colSpan = 6;
}

function drawJobs(jobs) {
  const body = $("jobs");
  body.replaceChildren();
  for (const job of jobs) {
    const row = body.insertRow();
    row.dataset.taskId = job.id;
    cell(row, "").appendChild(button(job.id, "link", () => showJob(job.id)));
    const status = job.status === "failed" && job.error_code ? `failed (${job.error_code})` : job.status;
    cell(row, status, `status status-${job.status}`);
    cell(row, String(job.prompt_count));
    cell(row, time(job.created_at));
    cell(row, time(job.finished_at));
    const actions = cell(row, "");
    if (job.status === "queued" || job.status === "running") {
      actions.appendChild(button("Cancel", "danger cancel", () => cancel(job.id)));
    }
  }
  if (!jobs.length) cell(body.insertRow(), "No job yet.", "muted").colSpan = 6;
}

function drawModels(models) {
  const body = $("models");
  body.replaceChildren();
  for (const m of models) {
    const row = body.insertRow();
    row.dataset.model = m.name;
    cell(row, m.name);
    cell(row, m.version ? m.version.slice(0, 12) : "–");
    cell(row, String(m.live_workers));
    cell(row, String(m.queued));
    cell(row, String(m.running));
    const notes = [];
    if (m.is_default) notes.push("default");
    if (m.intake_paused) notes.push("intake paused");
    if (m.fallback) notes.push(`falls back to ${m.fallback}`);
    cell(row, notes.join(", "), "muted");
  }
  if (!models.length) cell(body.insertRow(), "No model registered yet.", "muted").colSpan = 6;
}

// One row per arm: its weight, and its figures if it answered jobs in the last hour.
function drawAliases(aliases) {
  const body = $("aliases");
  body.replaceChildren();
  const secs = (v) => (v == null ? "–" : v < 1 ? `${Math.round(v * 1000)} ms` : seconds(v));
  for (const alias of aliases) {
    for (const arm of alias.arms) {
      const s = alias.stats.find((x) => x.model === arm.model);
      const row = body.insertRow();
      row.dataset.alias = alias.name;
      cell(row, alias.name);
      cell(row, arm.model);
      cell(row, `${arm.weight}%`);
      cell(row, s ? String(s.jobs) : "0");
      cell(row, s ? s.tokens_per_sec.toFixed(1) : "–");
      cell(row, s ? secs(s.queue_wait_p50_secs) : "–");
      cell(row, s ? secs(s.latency_p50_secs) : "–");
      cell(row, s ? secs(s.latency_p95_secs) : "–");
      cell(row, s ? `${(s.failure_rate * 100).toFixed(1)}%` : "–");
    }
  }
  if (!aliases.length) cell(body.insertRow(), "No alias.", "muted").colSpan = 9;
}

function drawBatches(batches) {
  const body = $("batches");
  body.replaceChildren();
  for (const batch of batches) {
    const row = body.insertRow();
    row.dataset.batchId = batch.id;
    cell(row, batch.id);
    cell(row, batch.status, `status status-${batch.status}`);
    cell(row, String(batch.request_counts.completed));
    cell(row, String(batch.request_counts.failed));
    cell(row, String(batch.request_counts.total));
    cell(row, time(new Date(batch.created_at * 1000).toISOString()));
    const actions = cell(row, "");
    if (batch.status === "validating" || batch.status === "in_progress") {
      actions.appendChild(button("Cancel", "danger cancel", () => cancelBatch(batch.id)));
    }
  }
  if (!batches.length) cell(body.insertRow(), "No batch yet.", "muted").colSpan = 7;
}

async function cancelBatch(id) {
  try {
    await call("POST", `/v1/batches/${id}/cancel`);
  } catch (e) {
    $("error").textContent = `Cancel failed: ${e.message}`;
  }
  await refresh();
}

async function refresh() {
  try {
    const o = await call("GET", "/admin/overview");
    const now = Date.now();
    $("queued").textContent = o.queued;
    $("running").textContent = o.running;
    $("oldest").textContent = o.queued ? seconds(o.oldest_queued_secs) : "–";
    const rate = tokenRate(now, o.generated_tokens);
    $("rate").textContent = rate.toFixed(1);
    $("worker-count").textContent = o.workers.length;
    keep(depth, { at: now, value: o.queued });
    keep(rates, { at: now, value: rate });
    chart($("depth-chart"), depth);
    chart($("rate-chart"), rates);
    const intake = $("intake");
    intake.hidden = false;
    intake.textContent = o.intake_paused ? "Resume intake" : "Pause intake";
    intake.dataset.paused = o.intake_paused;
    $("state").textContent = o.intake_paused ? "intake paused" : "intake open";
    drawWorkers(o.workers);
    drawJobs(o.jobs);
    drawModels(o.models);
    drawAliases(o.aliases);
    drawBatches((await call("GET", "/v1/batches?limit=10")).data);
    $("error").textContent = "";
  } catch (e) {
    if (e.status === 401 || e.status === 403) return signOut(e.status === 403
      ? "This key is not an admin key."
      : "The key was refused.");
    $("error").textContent = `Could not refresh: ${e.message}`;
  }
}

async function cancel(id) {
  try {
    await call("POST", `/batch/${id}/cancel`);
  } catch (e) {
    $("error").textContent = `Cancel failed: ${e.message}`;
  }
  await refresh();
}

async function showJob(id) {
  try {
    const job = await call("GET", `/batch_result/${id}`);
    $("detail").hidden = false;
    $("detail-id").textContent = id;
    const error = job.error ? `, ${job.error.code}: ${job.error.message}` : "";
    $("detail-summary").textContent =
      `${job.status}, ${job.counts.completed} of ${job.counts.total} prompts done${error}`;
    const list = $("detail-results");
    list.replaceChildren();
    for (const r of job.results) {
      const item = document.createElement("li");
      item.textContent = `${r.prompt} → ${r.generated_text}`;
      list.appendChild(item);
    }
  } catch (e) {
    $("error").textContent = `Could not read job ${id}: ${e.message}`;
  }
}

async function toggleIntake() {
  const paused = $("intake").dataset.paused === "true";
  try {
    await call("POST", paused ? "/admin/intake/resume" : "/admin/intake/pause");
  } catch (e) {
    $("error").textContent = `Could not switch intake: ${e.message}`;
  }
  await refresh();
}

function signIn(event) {
  if (event) event.preventDefault();
  if (event) {
    key = $("key").value.trim();
    sessionStorage.setItem("genq-key", key);
  }
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  $("sign-in-error").textContent = "";
  refresh();
  timer = setInterval(refresh, POLL_MS);
}

function signOut(reason) {
  clearInterval(timer);
  sessionStorage.removeItem("genq-key");
  key = null;
  $("board").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  $("intake").hidden = true;
  $("state").textContent = "not signed in";
  $("sign-in-error").textContent = typeof reason === "string" ? reason : "";
}

$("sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut());
$("intake").addEventListener("click", toggleIntake);
$("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
if (key) signIn();
