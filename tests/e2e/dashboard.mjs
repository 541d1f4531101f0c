// The operator dashboard in a real browser: a `loraplex serve` with 3 adapters and 2 slots gets traffic to
// named adapters, then headless Chromium (Debian's `chromium`) loads http://127.0.0.1:PORT/dashboard, lets
// the page poll /dashboard/state (virtual time), and the dumped DOM must hold the live values: the adapters
// in the slot table with their request counts, every adapter that had traffic in the adapter table, queue and
// KV numbers, the --max-loras hint (3 adapters active, 2 slots); a screenshot must be a real PNG of the page.
// Chromium missing: a failure under CI=true, a skip (exit 0, with a message) elsewhere.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { makeModel, startServer, assert, assertEq, run } from './lib.mjs';

const CHROMIUM = process.env.LP_CHROMIUM || 'chromium';
if (spawnSync(CHROMIUM, ['--version'], { stdio: 'ignore' }).status !== 0) {
  const msg = `${CHROMIUM} is not installed (scripts/deps.sh installs Debian's chromium)`;
  if (process.env.CI) {
    console.log(`FAIL ${msg}`);
    process.exit(1);
  }
  console.log(`skip: ${msg}`);
  process.exit(0);
}

const m = makeModel(3);
const names = ['legal-summary', 'code-review', 'medical-qa'];
const srv = await startServer(m.model, ['--max-loras', '2', '--max-cpu-loras', '2', '--lora-modules',
  ...names.map((n) => `${n}=${m.adapterDir(n)}`)]);

// Headless Chromium on the dashboard. The virtual time budget lets the page's timers run (it polls every
// second) without waiting for them in real time; its own profile folder keeps parallel runs apart.
function chromium(args) {
  const r = spawnSync(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    `--user-data-dir=${path.join(m.dir, 'chromium')}`, '--virtual-time-budget=4000', ...args,
    `${srv.url}/dashboard`], { encoding: 'utf8', timeout: 60000, maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new Error(`chromium exited with ${r.status} ${r.signal || ''}:\n${r.stderr.slice(-3000)}`);
  return r.stdout;
}

// The text of the element with `id`, from the dumped DOM.
function textOf(dom, id) {
  const r = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(dom);
  return r ? r[1] : null;
}
// The <tbody> of the table with `id`: its rows' data-adapter / data-requests.
function rowsOf(dom, id) {
  const body = new RegExp(`<table id="${id}">[\\s\\S]*?<tbody>([\\s\\S]*?)</tbody>`).exec(dom);
  assert(body, `table ${id} in the DOM`);
  const rows = {};
  for (const r of body[1].matchAll(/<tr data-adapter="([^"]+)"(?: data-requests="(\d+)")?/g)) rows[r[1]] = Number(r[2]);
  return rows;
}

let dom = '';
await run([
  ['traffic to named adapters', async () => {
    const c = srv.client();
    const counts = { 'legal-summary': 1, 'code-review': 2, 'medical-qa': 3 };  // the last two stay in the slots
    for (const [model, n] of Object.entries(counts))
      for (let i = 0; i < n; ++i) await c.completions.create({ model, prompt: 'hello', max_tokens: 2 });
    await c.completions.create({ model: 'model', prompt: 'hello', max_tokens: 2 });
    const s = await (await fetch(`${srv.url}/dashboard/state`)).json();
    assertEq(s.slots.map((x) => x.adapter).sort(), ['code-review', 'medical-qa'], 'the slots hold the last two');
    assertEq(s.requests.in_window, 7, 'every engine request is in the window');
    assertEq(s.active_adapters, 3, 'three adapters active');
    assertEq(s.suggested_max_loras, 4, 'ceil(1.2 x 3)');
    assert(s.hints.some((h) => h.kind === 'max_loras'), `a --max-loras hint: ${JSON.stringify(s.hints)}`);
    assert(s.tiers.slot > 0 && s.tiers.disk > 0, `slot hits and disk loads: ${JSON.stringify(s.tiers)}`);
    // Registration keeps the first two in the host tier (2 places); medical-qa is read from disk.
    assert(s.loads.disk_to_host.count >= 1 && s.loads.host_to_slot.count >= 3, `loads timed: ${JSON.stringify(s.loads)}`);
  }],
  ['the page in headless Chromium shows the live values', async () => {
    dom = chromium(['--dump-dom']);
    const polls = Number(/<body data-polls="(\d+)"/.exec(dom)?.[1] ?? 0);
    assert(polls >= 1, `the page polled /dashboard/state (data-polls ${polls}):\n${dom.slice(0, 2000)}`);
    assert(/^updated /.test(textOf(dom, 'status')), `status: ${textOf(dom, 'status')}`);
    const slots = rowsOf(dom, 'slots');
    assertEq(Object.keys(slots).sort(), ['code-review', 'medical-qa'], 'slot table');
    assertEq(slots['medical-qa'], 3, 'medical-qa requests in the slot table');
    assertEq(slots['code-review'], 2, 'code-review requests in the slot table');
    const adapters = rowsOf(dom, 'adapters');
    for (const n of names) assert(adapters[n] > 0, `${n} in the adapter table with requests: ${JSON.stringify(adapters)}`);
    assertEq(Object.keys(rowsOf(dom, 'host')).length, 2, 'host tier rows');
    assert(/^\d+ \/ \d+$/.test(textOf(dom, 'queue')), `queue: ${textOf(dom, 'queue')}`);
    assert(/^\d+%$/.test(textOf(dom, 'kv')), `kv usage: ${textOf(dom, 'kv')}`);
    assert(/^\d+ blocks, \d+ tokens$/.test(textOf(dom, 'kv-sub')), `kv: ${textOf(dom, 'kv-sub')}`);
    assertEq(textOf(dom, 'max-loras'), '2 / 4', 'now / suggested --max-loras');
    assert(/<ul id="hints"><li data-kind="max_loras">[^<]*--max-loras 4/.test(dom), 'the hint area holds the hint');
    assert(/^p50 [\d.]+ ms$/.test(textOf(dom, 'load-disk')), `disk load latency: ${textOf(dom, 'load-disk')}`);
  }],
  ['a screenshot of the page', async () => {
    const png = path.join(m.dir, 'dashboard.png');
    chromium([`--screenshot=${png}`, '--window-size=1280,1000']);
    const b = readFileSync(png);
    assertEq([...b.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], 'PNG signature');
    assertEq([b.readUInt32BE(16), b.readUInt32BE(20)], [1280, 1000], 'IHDR size');
    // A blank 1280x1000 page compresses to a few KB; text, tables and colours do not.
    assert(b.length > 20000, `a page with content (${b.length} bytes)`);
  }],
], async () => {
  await srv.stop();
  m.cleanup();
});
