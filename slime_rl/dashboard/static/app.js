// Live dashboard: one SSE stream of snapshots drives the number cards, the uPlot charts and the tables.
const $ = (sel) => document.querySelector(sel);
const fmt = (v, d = 2) => (v === undefined || v === null || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
const charts = {};
window.dashboardState = { snapshots: 0, last: null };

function chart(id, names) {
  const el = $("#" + id);
  const opts = { width: el.clientWidth || 360, height: 180, legend: { show: true },
    scales: { x: { time: true } }, series: [{}, ...names.map((n, i) => ({ label: n, stroke: ["#3b6ee8", "#e8703b", "#2fa34a", "#a33bd1"][i % 4], width: 2 }))] };
  return new uPlot(opts, [[], ...names.map(() => [])], el);
}

function seriesData(snap, names) {
  const keys = new Set();
  names.forEach((n) => (snap.series[n] || []).forEach(([t]) => keys.add(t)));
  const xs = [...keys].sort((a, b) => a - b);
  const cols = names.map((n) => { const m = new Map(snap.series[n] || []); return xs.map((t) => m.has(t) ? m.get(t) : null); });
  return [xs, ...cols];
}

function draw(id, names, snap) {
  const key = id + ":" + names.join(",");
  if (!charts[key]) { $("#" + id).innerHTML = ""; Object.keys(charts).filter((k) => k.startsWith(id + ":")).forEach((k) => delete charts[k]); charts[key] = chart(id, names); }
  charts[key].setData(seriesData(snap, names));
}

function render(snap) {
  window.dashboardState.snapshots += 1;
  window.dashboardState.last = snap;
  const L = snap.latest, R = snap.rates;
  $("#status").textContent = `${snap.records} records`;
  $("[data-testid=rollout-tps]").textContent = fmt(R.rollout_tokens_per_s, 1);
  $("[data-testid=traj-ps]").textContent = fmt(R.trajectories_per_s, 2);
  $("[data-testid=buffer]").textContent = `${fmt(L.buffer_depth, 0)} / ${fmt(L.buffer_pending, 0)}`;
  $("[data-testid=reward]").textContent = fmt(L.trainer_reward_mean, 3);
  $("[data-testid=masked]").textContent = fmt(L.trainer_masked_frac, 3);
  $("[data-testid=trainer]").textContent = `${fmt(L.trainer_step_time_s, 1)} s / ${fmt(L.trainer_tokens_per_s, 0)}`;
  $("[data-testid=version]").textContent = fmt(L.trainer_version, 0);
  $("[data-testid=sandbox]").textContent = `${fmt(R.sandbox_executions_per_s, 2)} / ${fmt(snap.totals.sandbox_failures || 0, 0)}`;
  const engines = Object.keys(snap.series).filter((k) => k.startsWith("rollout_tps:"));
  if (engines.length) draw("c-rollout", engines, snap);
  draw("c-reward", ["trainer_reward_mean", "rollout_reward", "eval_reward"], snap);
  draw("c-buffer", ["buffer_depth", "buffer_pending"], snap);
  draw("c-trainer", ["trainer_step_time_s", "trainer_masked_frac"], snap);
  renderStaleness(snap.staleness_hist);
  $("#engines").innerHTML = "<tr><th>engine</th><th>version</th><th>last sync (s)</th></tr>" + Object.entries(snap.engine_versions)
    .map(([u, v]) => `<tr><td>${u}</td><td>${v}</td><td>${fmt(snap.sync_s[u], 2)}</td></tr>`).join("");
  $("#trajectories tbody").innerHTML = snap.trajectories.slice(0, 20).map((t) =>
    `<tr data-id="${t.id}"><td>${fmt(t.reward, 2)}</td><td>${t.length}</td><td>${t.status}</td><td>${t.env}</td><td>${escapeHtml((t.text || "").slice(0, 80))}</td></tr>`).join("");
}

function renderStaleness(hist) {
  const el = $("#c-staleness");
  const entries = Object.entries(hist);
  const max = Math.max(1, ...entries.map(([, c]) => c));
  el.innerHTML = entries.map(([lag, c]) => `<div class="bar" data-lag="${lag}" data-count="${c}" style="display:flex;align-items:center;gap:.4rem;font-size:.8rem">
    <span style="width:2.5rem">lag ${lag}</span><span style="background:#3b6ee8;height:14px;width:${Math.round(200 * c / max)}px"></span><span>${c}</span></div>`).join("");
}

function escapeHtml(s) { return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

async function openTrajectory(id) {
  const r = await fetch(`/api/trajectory/${id}`);
  if (!r.ok) return;
  const t = await r.json();
  $("#viewer-id").textContent = `${id.slice(0, 8)} · reward ${fmt(t.reward, 2)} · ${t.status}`;
  $("#tokens").innerHTML = t.tokens.map((k) => `<span class="tok ${k.mask === null ? "prompt" : "m" + k.mask}" title="id ${k.id}${k.version !== undefined ? " · v" + k.version : ""}">${escapeHtml(k.text)}</span>`).join("");
  $("#viewer").hidden = false;
}

$("#trajectories").addEventListener("click", (e) => { const row = e.target.closest("tr[data-id]"); if (row) openTrajectory(row.dataset.id); });
$("#viewer-close").addEventListener("click", () => { $("#viewer").hidden = true; });
document.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", async () => {
  const token = $("#token").value;
  const r = await fetch(`/api/control/${b.dataset.action}`, { method: "POST", headers: token ? { Authorization: `Bearer ${token}` } : {} });
  $("#control-result").textContent = r.ok ? `${b.dataset.action}: accepted` : `${b.dataset.action}: refused (${r.status})`;
}));

const source = new EventSource("/api/stream");
source.onmessage = (e) => render(JSON.parse(e.data));
source.onerror = () => { $("#status").textContent = "disconnected, retrying…"; };
