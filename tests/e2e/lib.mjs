// Helpers for the end-to-end tests: build a tiny demo model with adapters, start a real `loraplex serve` on a
// free loopback port (--port 0; the port is read from its log), talk to it with the official `openai` client,
// scrape /metrics with parse-prometheus-text-format, and a tiny assertion/test runner that exits non-zero on
// the first failure. Paths come from the environment the gtest wrapper sets: LP_BIN (build/loraplex) and
// LP_NPM_DIR (tests/fixtures/npm).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const BIN = process.env.LP_BIN;
const NPM = process.env.LP_NPM_DIR;
if (!BIN || !NPM) {
  console.error('set LP_BIN (the loraplex binary) and LP_NPM_DIR (tests/fixtures/npm)');
  process.exit(2);
}
const require = createRequire(path.join(NPM, 'package.json'));
export const OpenAI = (await import(path.join(NPM, 'node_modules/openai/index.mjs'))).default;
export const parsePrometheus = require('parse-prometheus-text-format');

export const ADAPTERS = ['medical-qa', 'legal-summary', 'code-review', 'french-support', 'retail-chat',
  'travel-agent', 'finance-report', 'hr-policy', 'edu-tutor', 'insurance-claims'];

// A fresh temp folder with DIR/model (a demo model, `tiny` unless `shape` says otherwise, e.g. `smol` where a
// request must run for seconds, + n rank-8 adapters under DIR/model/adapters).
export function makeModel(nAdapters = 10, shape = 'tiny') {
  const dir = mkdtempSync(path.join(tmpdir(), 'lp-e2e-'));
  const model = path.join(dir, 'model');
  execFileSync(BIN, ['demo-model', model, '--shape', shape, '--adapters', String(nAdapters), '--rank', '8', '--mixed'],
    { stdio: 'pipe' });
  return { dir, model, adapterDir: (name) => path.join(model, 'adapters', name),
    cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

// Starts `loraplex serve MODEL --port 0 ...args`; resolves when /health is 200.
export async function startServer(model, args = [], { env = {} } = {}) {
  const proc = spawn(BIN, ['serve', model, '--port', '0', '--threads', '2', ...args],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let port = 0;
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => {
    log += d;
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
    if (m) port = Number(m[1]);
  });
  const deadline = Date.now() + 30000;
  for (;;) {
    if (Date.now() > deadline) throw new Error(`server did not become healthy:\n${log}`);
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}:\n${log}`);
    if (port) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/health`);
        if (r.status === 200) break;
      } catch { /* not accepting yet */ }
    }
    await sleep(20);
  }
  const url = `http://127.0.0.1:${port}`;
  return {
    proc, port, url, exited,
    log: () => log,
    client: (opts = {}) => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000, ...opts }),
    // SIGTERM, then the exit status must be 0 (a crash or a sanitizer report fails the test).
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      const r = await exited;
      if (r.code !== 0) throw new Error(`server exited with ${JSON.stringify(r)}:\n${log.slice(-4000)}`);
      return r;
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// /metrics parsed: { name: {type, metrics: [{labels, value | buckets...}]} }.
export async function scrape(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const fams = {};
  for (const f of parsePrometheus(text)) fams[f.name] = f;
  return fams;
}

// The value of one series (labels must match exactly those given); 0 when absent. Histograms: count.
export function metric(fams, name, labels = {}) {
  const f = fams[name];
  if (!f) return 0;
  for (const m of f.metrics) {
    const l = m.labels || {};
    if (Object.keys(labels).every((k) => l[k] === labels[k])) {
      return Number(m.value ?? m.count ?? 0);
    }
  }
  return 0;
}

export async function waitFor(fn, what, ms = 10000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last === true) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
export function assertEq(a, b, msg) {
  const ja = JSON.stringify(a), jb = JSON.stringify(b);
  if (ja !== jb) throw new Error(`assertion failed: ${msg}\n  got:      ${ja}\n  expected: ${jb}`);
}

// Expects `fn` to throw an openai APIError with `status` (and the class name `cls` when given).
export async function expectError(fn, status, cls, msg) {
  try {
    await fn();
  } catch (e) {
    if (e.status !== status) throw new Error(`${msg}: expected HTTP ${status}, got ${e.status}: ${e.message}`);
    if (cls && e.constructor.name !== cls) throw new Error(`${msg}: expected ${cls}, got ${e.constructor.name}`);
    return e;
  }
  throw new Error(`${msg}: expected HTTP ${status}, but the call succeeded`);
}

// Runs named async test functions in order; prints one line each; exits 1 on the first failure.
export async function run(tests, cleanup = async () => {}) {
  let failed = false;
  for (const [name, fn] of tests) {
    const t0 = Date.now();
    try {
      await fn();
      console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      console.log(`FAIL ${name}: ${e.stack || e}`);
      failed = true;
      break;
    }
  }
  try {
    await cleanup();
  } catch (e) {
    console.log(`FAIL cleanup: ${e.stack || e}`);
    failed = true;
  }
  process.exit(failed ? 1 : 0);
}

// Greedy text of one completion (no streaming).
export async function greedy(client, model, prompt, maxTokens = 12) {
  const r = await client.completions.create({ model, prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true });
  return r.choices[0].text;
}
