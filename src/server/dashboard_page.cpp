// GET /dashboard: one self-contained page (inline CSS and JS, nothing fetched from anywhere but this server)
// that polls GET /dashboard/state every second and renders it with plain DOM calls. Adapter names come from
// clients (--lora-root, the resolver), so every value goes in as textContent, never as HTML; the
// Content-Security-Policy header lets the page run its own inline script and reach this server only.
#include "server/dashboard.h"
#include "server/server_state.h"

namespace lp::server {

namespace {

constexpr const char* kPage = R"PAGE(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loraplex dashboard</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #1d2330; background: #f6f7f9; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  h2 { font-size: 15px; margin: 20px 0 6px; }
  #status { color: #5b6478; font-size: 12px; }
  #status.error { color: #b42318; font-weight: 600; }
  .cards { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 12px; }
  .card { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 8px 12px; min-width: 150px; }
  .card .label { color: #5b6478; font-size: 12px; }
  .card .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
  .card .sub { color: #5b6478; font-size: 12px; }
  #hints { list-style: none; padding: 0; margin: 0; }
  #hints li { background: #fff7e6; border: 1px solid #f5c46b; border-radius: 6px; padding: 6px 10px; margin: 4px 0; }
  #hints li.none { background: #eefaf1; border-color: #9bd3ae; }
  table { border-collapse: collapse; background: #fff; border: 1px solid #dde1e8; min-width: 480px; }
  th, td { padding: 4px 10px; border-bottom: 1px solid #eceef2; text-align: left; }
  th { background: #eef0f4; font-weight: 600; font-size: 12px; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.empty td { color: #98a0b0; }
</style>
</head>
<body data-polls="0">
<h1>loraplex dashboard <span id="model"></span></h1>
<div id="status">waiting for the first update</div>

<h2>Hints (last 5 minutes)</h2>
<ul id="hints"></ul>

<div class="cards">
  <div class="card"><div class="label">requests/s (10 s / 5 min)</div><div class="value" id="req-rate"></div>
    <div class="sub" id="req-window"></div></div>
  <div class="card"><div class="label">queue: running / waiting</div><div class="value" id="queue"></div></div>
  <div class="card"><div class="label">KV cache usage</div><div class="value" id="kv"></div>
    <div class="sub" id="kv-sub"></div></div>
  <div class="card"><div class="label">evictions/s slot / host (5 min)</div><div class="value" id="evictions"></div>
    <div class="sub" id="evictions-recent"></div></div>
  <div class="card"><div class="label">--max-loras: now / suggested</div><div class="value" id="max-loras"></div>
    <div class="sub" id="active"></div></div>
  <div class="card"><div class="label">served from slot / host / disk (5 min)</div>
    <div class="value" id="tiers"></div><div class="sub" id="activations"></div></div>
  <div class="card"><div class="label">load host &rarr; slot (5 min)</div><div class="value" id="load-host"></div>
    <div class="sub" id="load-host-sub"></div></div>
  <div class="card"><div class="label">load disk &rarr; host (5 min)</div><div class="value" id="load-disk"></div>
    <div class="sub" id="load-disk-sub"></div></div>
</div>

<h2>Adapter slots</h2>
<table id="slots"><thead><tr><th>slot</th><th>adapter</th><th>pinned</th><th>holders</th><th>requests</th>
  <th>req/s 10 s</th><th>req/s 5 min</th></tr></thead><tbody></tbody></table>

<h2>Host tier <span id="host-count"></span></h2>
<table id="host"><thead><tr><th>adapter (most recently used first)</th><th>in a slot</th><th>requests</th>
  <th>req/s 10 s</th><th>req/s 5 min</th></tr></thead><tbody></tbody></table>

<h2>Adapters with traffic or a place in a tier <span id="registered"></span></h2>
<table id="adapters"><thead><tr><th>adapter</th><th>tier</th><th>pinned</th><th>requests</th><th>last 5 min</th>
  <th>req/s 10 s</th><th>req/s 5 min</th><th>share (5 min)</th></tr></thead><tbody></tbody></table>

<script>
'use strict';
const $ = (id) => document.getElementById(id);
const fmt = (x, d = 2) => (x === null || x === undefined) ? '–' : Number(x).toFixed(d);
const pct = (x) => (x === null || x === undefined) ? '–' : (100 * x).toFixed(0) + '%';
const ms = (x) => fmt(x, x < 1 ? 3 : 1) + ' ms';

function set(id, text) { $(id).textContent = text; }

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tableId, rows, columns, emptyText) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    tr.className = 'empty';
    const td = cell(emptyText);
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const r of rows) {
    const tr = document.createElement('tr');
    if (r.adapter || r.name) tr.dataset.adapter = r.adapter || r.name;
    if (r.requests !== undefined) tr.dataset.requests = String(r.requests);
    for (const [get, cls] of columns) tr.appendChild(cell(get(r), cls));
    body.appendChild(tr);
  }
}

function loadText(l) {
  if (!l.count) return ['–', 'no loads'];
  const max = l.max_le_ms === null ? '> 2500 ms' : '≤ ' + l.max_le_ms + ' ms';
  return ['p50 ' + ms(l.p50_ms), l.count + ' loads, mean ' + ms(l.mean_ms) + ', p95 ' + ms(l.p95_ms) + ', max ' + max];
}

function render(s) {
  set('model', s.model ? '· ' + s.model : '');
  const hints = $('hints');
  hints.replaceChildren();
  for (const h of s.hints) {
    const li = document.createElement('li');
    li.dataset.kind = h.kind;
    li.textContent = h.message;
    hints.appendChild(li);
  }
  if (s.hints.length === 0) {
    const li = document.createElement('li');
    li.className = 'none';
    li.textContent = 'No hints: the cache fits the traffic of the last 5 minutes.';
    hints.appendChild(li);
  }
  set('req-rate', fmt(s.requests.rate_10s) + ' / ' + fmt(s.requests.rate_5m));
  set('req-window', s.requests.in_window + ' requests in ' + fmt(s.window_s, 0) + ' s of history');
  set('queue', s.engine.running + ' / ' + s.engine.waiting);
  set('kv', pct(s.engine.kv_usage));
  set('kv-sub', s.engine.kv_blocks + ' blocks, ' + s.engine.kv_capacity_tokens + ' tokens');
  set('evictions', fmt(s.evictions.slot.rate_5m) + ' / ' + fmt(s.evictions.host.rate_5m));
  set('evictions-recent', 'last 10 s: ' + fmt(s.evictions.slot.rate_10s) + ' / ' + fmt(s.evictions.host.rate_10s));
  set('max-loras', s.max_loras + ' / ' + (s.suggested_max_loras || '–'));
  set('active', s.active_adapters + ' adapters active in 5 min; --max-cpu-loras ' + s.max_cpu_loras);
  set('tiers', pct(s.tiers.slot) + ' / ' + pct(s.tiers.host) + ' / ' + pct(s.tiers.disk));
  set('activations', s.tiers.activations + ' adapter activations');
  const lh = loadText(s.loads.host_to_slot), ld = loadText(s.loads.disk_to_host);
  set('load-host', lh[0]);
  set('load-host-sub', lh[1]);
  set('load-disk', ld[0]);
  set('load-disk-sub', ld[1] + (s.loads.failures ? ', ' + s.loads.failures + ' failed' : ''));
  const rates = [[(r) => String(r.requests), 'num'], [(r) => fmt(r.rate_10s), 'num'], [(r) => fmt(r.rate_5m), 'num']];
  fill('slots', s.slots.map((r) => r.adapter === null ? { ...r, requests: undefined } : r), [
    [(r) => String(r.index), 'num'], [(r) => r.adapter === null ? '(empty)' : r.adapter],
    [(r) => r.pinned ? 'pinned' : ''], [(r) => String(r.holders), 'num'],
    ...rates.map(([get, cls]) => [(r) => r.adapter === null ? '' : get(r), cls])],
    s.lora_enabled ? 'no slots' : 'LoRA is not enabled (--max-loras)');
  set('host-count', '(' + s.host.length + ' of ' + s.max_cpu_loras + ')');
  fill('host', s.host, [[(r) => r.adapter], [(r) => r.in_slot ? 'yes' : ''], ...rates], 'empty');
  set('registered', '(' + s.adapters.length + ' of ' + s.registered + ' registered)');
  fill('adapters', s.adapters, [[(r) => r.name], [(r) => r.tier], [(r) => r.pinned ? 'pinned' : ''],
    [(r) => String(r.requests), 'num'], [(r) => String(r.requests_5m), 'num'], ...rates.slice(1),
    [(r) => pct(r.share_5m), 'num']], 'no adapter traffic in the last 5 minutes');
}

async function poll() {
  try {
    const r = await fetch('/dashboard/state', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status + ': ' + (await r.text()).slice(0, 200));
    render(await r.json());
    document.body.dataset.polls = String(Number(document.body.dataset.polls) + 1);
    $('status').className = '';
    set('status', 'updated ' + new Date().toLocaleTimeString() + ' (every second)');
  } catch (e) {
    $('status').className = 'error';
    set('status', 'update failed: ' + e.message);
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
)PAGE";

}  // namespace

void handle_dashboard_page(ServerState&, const HttpRequest&, HttpResponse& res) {
  res.content_type = "text/html; charset=utf-8";
  res.body = kPage;
  res.set_header(
      "Content-Security-Policy",
      "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'");
  res.set_header("Cache-Control", "no-store");
}

}  // namespace lp::server
