// Server lifecycle end to end: --api-key (and LORAPLEX_API_KEY) guarding /v1/* but not /health or /metrics;
// no key: open; a full waiting queue answers 429 with Retry-After; a client that disconnects before its first
// token or mid-stream frees everything (running, waiting, KV, adapter holds back to idle, per /metrics);
// SIGTERM drains: the in-flight stream finishes in full, new requests are refused, the process exits 0;
// SIGTERM while the model loads exits 0 at once.
import { spawn } from 'node:child_process';
import { BIN, makeModel, startServer, scrape, metric, waitFor, assert, assertEq, expectError, run, sleep } from './lib.mjs';

const m = makeModel(2);
const srv = await startServer(m.model, ['--max-num-seqs', '1', '--max-waiting', '1', '--lora-modules',
  `medical-qa=${m.adapterDir('medical-qa')}`], { env: { LORAPLEX_API_KEY: 'sekret' } });
// One running request at a time, so queued requests wait long enough to be abandoned before their first token.
const open = await startServer(m.model, ['--max-num-seqs', '1', '--lora-modules', `medical-qa=${m.adapterDir('medical-qa')}`],
  { env: { VLLM_ALLOW_RUNTIME_LORA_UPDATING: 'true' } });

function streamRequest(url, body) {
  const ctl = new AbortController();
  const res = fetch(`${url}/v1/completions`, { method: 'POST', signal: ctl.signal,
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
  return { ctl, res };
}

async function idle(url) {
  const f = await scrape(url);
  const v = {
    running: metric(f, 'vllm:num_requests_running'), waiting: metric(f, 'vllm:num_requests_waiting'),
    kv: metric(f, 'vllm:kv_cache_usage_perc'), held: metric(f, 'loraplex_lora_slots_held'),
    inflight: metric(f, 'loraplex_http_in_flight_requests'),
  };
  return Object.values(v).every((x) => x === 0) ? true : v;
}

await run([
  ['auth: /v1 needs the key, /health and /metrics do not', async () => {
    await expectError(() => srv.client().models.list(), 401, 'AuthenticationError', 'no key');
    await expectError(() => srv.client({ apiKey: 'sekre' }).models.list(), 401, 'AuthenticationError', 'wrong key');
    await expectError(() => srv.client({ apiKey: 'sekret2' }).completions.create({ prompt: 'x', model: 'model' }),
      401, 'AuthenticationError', 'longer key');
    const ok = await srv.client({ apiKey: 'sekret' }).models.list();
    assertEq(ok.data.length, 2, 'authorized');
    assertEq((await fetch(`${srv.url}/health`)).status, 200, '/health open');
    assertEq((await fetch(`${srv.url}/metrics`)).status, 200, '/metrics open');
    const r = await fetch(`${srv.url}/v1/nothing`);
    assertEq(r.status, 401, 'unknown /v1 paths are guarded too');
  }],
  ['auth off: no key needed', async () => {
    const list = await open.client().models.list();
    assertEq(list.data[0].id, 'model', 'served name defaults to the folder name');
    const load = (url, headers = {}) => fetch(`${url}/v1/load_lora_adapter`, { method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify({ lora_name: 'x' }) });
    assertEq((await load(open.url)).status, 400, 'VLLM_ALLOW_RUNTIME_LORA_UPDATING=true enables the admin endpoints');
    assertEq((await load(srv.url, { Authorization: 'Bearer sekret' })).status, 404, 'off without the flag');
  }],
  ['a full waiting queue answers 429 with Retry-After', async () => {
    const c = srv.client({ apiKey: 'sekret' });
    const body = JSON.stringify({ model: 'model', prompt: 'x', max_tokens: 400, ignore_eos: true, temperature: 0 });
    const send = () => fetch(`${srv.url}/v1/completions`, { method: 'POST', body,
      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sekret' } });
    const rs = await Promise.all(Array.from({ length: 8 }, send));
    const statuses = rs.map((r) => r.status);
    assert(statuses.includes(200), `some succeed: ${statuses}`);
    const refused = rs.filter((r) => r.status === 429);
    assert(refused.length > 0, `some are refused: ${statuses}`);
    assertEq(refused[0].headers.get('retry-after'), '1', 'Retry-After');
    assertEq((await refused[0].json()).error.type, 'RateLimitError', 'error type');
    await Promise.all(rs.filter((r) => !r.bodyUsed).map((r) => r.text()));
    assertEq((await c.models.list()).data.length, 2, 'healthy afterwards');
  }],
  ['a client gone before its first token: the request never runs', async () => {
    const f0 = await scrape(open.url);
    // The blockers are of the same tenant as w: admission is FCFS within a tenant (round-robin across them).
    const blockers = Array.from({ length: 8 }, () => streamRequest(open.url, { model: 'medical-qa', prompt: 'b', max_tokens: 1000, ignore_eos: true }));
    await sleep(50);
    const w = streamRequest(open.url, { model: 'medical-qa', prompt: 'w', max_tokens: 1000, ignore_eos: true });
    const wres = await w.res;  // headers arrive at once; no data chunk yet (it waits behind the blockers)
    const reader = wres.body.getReader();
    const first = await Promise.race([reader.read().then((r) => new TextDecoder().decode(r.value)), sleep(150).then(() => '')]);
    assert(!first.includes('data:'), `no token before the disconnect: ${first}`);
    w.ctl.abort();
    for (const b of blockers) await (await b.res).text();
    await waitFor(() => idle(open.url), 'idle after the disconnect');
    const f1 = await scrape(open.url);
    const gen = metric(f1, 'loraplex_generation_tokens_total') - metric(f0, 'loraplex_generation_tokens_total');
    assert(gen <= 8000 + 1, `the abandoned request generated nothing (generated ${gen - 8000})`);
    assert(metric(f1, 'loraplex_request_aborted_total') >= 1, 'abort counted');
  }],
  ['a client gone mid-stream: the engine stops early and frees KV and the adapter hold', async () => {
    const f0 = await scrape(open.url);
    const s = streamRequest(open.url, { model: 'medical-qa', prompt: 'm', max_tokens: 1000, ignore_eos: true });
    const reader = (await s.res).body.getReader();
    let got = '';
    while (!got.includes('"text"')) got += new TextDecoder().decode((await reader.read()).value);
    s.ctl.abort();
    await waitFor(() => idle(open.url), 'idle after the disconnect');
    const f1 = await scrape(open.url);
    const gen = metric(f1, 'loraplex_generation_tokens_total') - metric(f0, 'loraplex_generation_tokens_total');
    assert(gen < 1000, `stopped before max_tokens (generated ${gen})`);
    assert(metric(f1, 'loraplex_request_aborted_total') > metric(f0, 'loraplex_request_aborted_total'), 'abort counted');
    const r = await open.client().completions.create({ model: 'medical-qa', prompt: 'ok', max_tokens: 3 });
    assertEq(r.usage.completion_tokens, 3, 'still serving');
  }],
  ['SIGTERM: the in-flight stream finishes, new requests are refused, exit 0', async () => {
    const c = open.client();
    const stream = await c.completions.create({ model: 'model', prompt: 'x', max_tokens: 1000, temperature: 0,
      ignore_eos: true, stream: true, stream_options: { include_usage: true } });
    let sent = false, usage = null, finish = null, refused = null;
    for await (const ch of stream) {
      if (!sent) {
        open.proc.kill('SIGTERM');
        sent = true;
        await sleep(100);
        try {
          const r = await fetch(`${open.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ model: 'model', prompt: 'y', max_tokens: 2 }) });
          refused = r.status;
        } catch { refused = 'connection refused'; }
      }
      if (ch.usage) usage = ch.usage;
      if (ch.choices.length && ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
    }
    assertEq(finish, 'length', 'the in-flight request ran to its end');
    assertEq(usage.completion_tokens, 1000, 'all its tokens');
    assert(refused === 503 || refused === 'connection refused', `new request refused while draining: ${refused}`);
    const { code, signal } = await open.exited;
    assertEq([code, signal], [0, null], `exit status\n${open.log()}`);
  }],
  ['SIGTERM while the model loads: exit 0 at once, not after the load', async () => {
    // The smol shape's weights take a while to copy in, and the port is bound (and logged) before that. The
    // sanitized trees skip it: writing that model takes them many seconds, for a path the release run covers.
    if (process.env.LP_SANITIZED === '1') return;
    const big = makeModel(0, 'smol');
    try {
      const proc = spawn(BIN, ['serve', big.model, '--port', '0', '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let log = '';
      proc.stdout.on('data', (d) => { log += d; });
      proc.stderr.on('data', (d) => { log += d; });
      const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
      await waitFor(() => /listening on/.test(log) || log, 'the listening line');
      proc.kill('SIGTERM');
      const { code, signal } = await exited;
      assertEq([code, signal], [0, null], `exit status\n${log}`);
      assert(/SIGTERM while loading: exiting/.test(log) && !/ready: serving/.test(log), `stopped during the load:\n${log}`);
    } finally {
      big.cleanup();
    }
  }],
], async () => { await srv.stop(); if (open.proc.exitCode === null) await open.stop(); m.cleanup(); });
