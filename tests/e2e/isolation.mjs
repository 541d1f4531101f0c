// Tenant isolation end to end against a real `loraplex serve`: a pin of the last evictable slot is refused
// (start-up error naming --pin, 400 from the load endpoint); a flood from one tenant beyond
// --max-waiting-per-adapter gets fast 429s with Retry-After while its admitted requests finish and another
// tenant is still served ahead of the backlog; a request that cannot get an adapter slot never delays the base
// model and is answered 503 after --adapter-wait-timeout; an adapter unloaded while its request waits answers
// 404 (a streaming one gets exactly one `data: {"error": ...}` event, then [DONE]); unloading an adapter in use
// lets its running request finish; /health is 503 while the model loads, 200 when ready, 503 while draining.
import { spawn, spawnSync } from 'node:child_process';
import { makeModel, startServer, scrape, metric, waitFor, assert, assertEq, run, sleep, BIN } from './lib.mjs';

// The smol demo shape (not tiny): a request that holds the only slot must run for seconds, not milliseconds.
const m = makeModel(4, 'smol');
const mods = ['medical-qa', 'legal-summary', 'code-review'].map((n) => `${n}=${m.adapterDir(n)}`);
// One slot: every adapter request needs the slot the others hold.
const srv = await startServer(m.model, ['--max-loras', '1', '--max-cpu-loras', '4', '--max-lora-rank', '8',
  '--max-num-seqs', '2', '--max-waiting-per-adapter', '4', '--adapter-wait-timeout', '1', '--kv-cache-tokens', '16384',
  '--allow-runtime-lora-updating', '--lora-modules', ...mods]);

const post = (path, body, signal) => fetch(`${srv.url}${path}`, { method: 'POST', signal,
  headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
const complete = (model, max_tokens, extra = {}) =>
  post('/v1/completions', { model, prompt: 'hello there', max_tokens, ignore_eos: true, temperature: 0, ...extra });

async function idle() {
  const f = await scrape(srv.url);
  const v = { running: metric(f, 'vllm:num_requests_running'), waiting: metric(f, 'vllm:num_requests_waiting'),
    kv: metric(f, 'vllm:kv_cache_usage_perc'), held: metric(f, 'loraplex_lora_slots_held') };
  return Object.values(v).every((x) => x === 0) ? true : v;
}

// A streaming request that holds the only slot until aborted; resolves once its first token arrived.
async function holdSlot(model) {
  const ctl = new AbortController();
  const res = await post('/v1/completions', { model, prompt: 'hold', max_tokens: 4000, ignore_eos: true, stream: true },
    ctl.signal);
  assertEq(res.status, 200, 'the slot holder starts');
  const reader = res.body.getReader();
  let got = '';
  while (!got.includes('"text"')) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the slot holder ended early: ${got}`);
    got += new TextDecoder().decode(value);
  }
  return () => ctl.abort();
}

await run([
  ['a pin of the only slot is refused at start-up, naming --pin', async () => {
    const r = spawnSync(BIN, ['serve', m.model, '--port', '0', '--max-loras', '1', '--lora-modules', mods[0],
      '--pin', 'medical-qa'], { encoding: 'utf8', timeout: 30000 });
    assert(r.status !== 0, `serve must fail (status ${r.status})`);
    assert(/--pin medical-qa/.test(r.stderr) && /at most 0 adapter/.test(r.stderr), `error names the flag: ${r.stderr}`);
  }],
  ['a pinned load that would take the last evictable slot is a 400', async () => {
    const r = await post('/v1/load_lora_adapter', { lora_name: 'p', lora_path: m.adapterDir('french-support'), pinned: true });
    assertEq(r.status, 400, 'pinned load');
    assert(/can be pinned/.test(await r.text()), 'says why');
    const list = (await (await fetch(`${srv.url}/v1/models`)).json()).data.map((x) => x.id);
    assert(!list.includes('p'), 'not registered');
  }],
  ['a request without a slot never delays the base model, and gets 503 after --adapter-wait-timeout', async () => {
    const release = await holdSlot('medical-qa');
    const t0 = Date.now();
    let waiterDone = 0;
    const waiting = complete('legal-summary', 4).then((r) => { waiterDone = Date.now(); return r; });
    await sleep(50);
    const base = await complete('', 4);
    assertEq(base.status, 200, 'base served');
    assertEq(waiterDone, 0, 'the base request finished while the adapter request still waited for its slot');
    const r = await waiting;
    const waited = Date.now() - t0;
    assertEq(r.status, 503, 'no slot within the timeout');
    assertEq(r.headers.get('retry-after'), '1', 'Retry-After');
    const body = await r.json();
    assert(/adapter-wait-timeout/.test(body.error.message), body.error.message);
    assert(waited >= 900 && waited < 5000, `answered after ${waited} ms`);
    release();
    await waitFor(idle, 'idle after the holder left');
  }],
  ['an adapter unloaded while its request waits: 404', async () => {
    const release = await holdSlot('medical-qa');
    const waiting = complete('code-review', 4);
    await sleep(100);
    const u = await post('/v1/unload_lora_adapter', { lora_name: 'code-review' });
    assertEq(u.status, 200, 'unload');
    const r = await waiting;
    assertEq(r.status, 404, 'the waiting request');
    assertEq((await r.json()).error.type, 'NotFoundError', 'error type');
    release();
    await waitFor(idle, 'idle');
    const back = await post('/v1/load_lora_adapter', { lora_name: 'code-review', lora_path: m.adapterDir('code-review') });
    assertEq(back.status, 200, 'loaded again');
  }],
  ['a stream whose adapter is unloaded while it waits: one error event, then [DONE]', async () => {
    const release = await holdSlot('medical-qa');
    const res = await post('/v1/completions', { model: 'code-review', prompt: 'x', max_tokens: 4, stream: true });
    assertEq(res.status, 200, 'the stream starts');
    await sleep(100);
    assertEq((await post('/v1/unload_lora_adapter', { lora_name: 'code-review' })).status, 200, 'unload');
    const text = await res.text();
    const events = text.split('\n\n').map((e) => e.trim()).filter((e) => e.startsWith('data:'));
    assertEq(events.length, 2, `one error event and [DONE]: ${text}`);
    const err = JSON.parse(events[0].slice(5));
    assertEq(err.error.type, 'NotFoundError', 'the error event says what happened');
    assertEq(events[1], 'data: [DONE]', 'then [DONE]');
    release();
    await waitFor(idle, 'idle');
    assertEq((await post('/v1/load_lora_adapter', { lora_name: 'code-review', lora_path: m.adapterDir('code-review') })).status,
      200, 'loaded again');
  }],
  ['unloading an adapter in use lets its running request finish', async () => {
    const running = complete('legal-summary', 60);  // needs the slot: it is free again
    await waitFor(async () => metric(await scrape(srv.url), 'vllm:num_requests_running') === 1, 'running');
    const u = await post('/v1/unload_lora_adapter', { lora_name: 'legal-summary' });
    assertEq(u.status, 200, 'unload deferred, answered at once');
    const r = await running;
    assertEq(r.status, 200, 'the running request finished');
    assertEq((await r.json()).usage.completion_tokens, 60, 'in full');
    assertEq((await complete('legal-summary', 2)).status, 404, 'new requests: 404');
    await waitFor(idle, 'idle');
    await post('/v1/load_lora_adapter', { lora_name: 'legal-summary', lora_path: m.adapterDir('legal-summary') });
  }],
  ['a flood beyond --max-waiting-per-adapter: fast 429s, admitted ones finish, another tenant goes first', async () => {
    const f0 = await scrape(srv.url);
    const flood = Array.from({ length: 24 }, () => {
      const t0 = Date.now();
      return complete('', 24).then(async (r) => ({ status: r.status, ms: Date.now() - t0, retry: r.headers.get('retry-after'),
        body: await r.json(), done: Date.now() }));
    });
    await sleep(50);
    const other = complete('medical-qa', 4).then(async (r) => ({ status: r.status, done: Date.now() }));
    const rs = await Promise.all(flood);
    const o = await other;
    const refused = rs.filter((r) => r.status === 429);
    const ok = rs.filter((r) => r.status === 200);
    assert(refused.length > 0 && ok.length > 0, `some refused, some served: ${rs.map((r) => r.status)}`);
    assertEq(refused.length + ok.length, rs.length, 'only 200 and 429');
    for (const r of refused) {
      assert(r.ms < 1000, `a 429 took ${r.ms} ms`);
      assertEq(r.retry, '1', 'Retry-After');
      assertEq(r.body.error.type, 'RateLimitError', 'error type');
      assert(/max-waiting-per-adapter/.test(r.body.error.message), r.body.error.message);
    }
    for (const r of ok) assertEq(r.body.usage.completion_tokens, 24, 'admitted requests finish in full');
    assertEq(o.status, 200, 'the other tenant is not refused for the first one\'s flood');
    const lastBase = Math.max(...ok.map((r) => r.done));
    assert(o.done < lastBase, 'the other tenant finished before the flooding tenant\'s backlog');
    await waitFor(idle, 'idle after the flood');
    const f1 = await scrape(srv.url);
    assertEq(metric(f1, 'loraplex_http_requests_total', { code: '500' }) - metric(f0, 'loraplex_http_requests_total', { code: '500' }),
      0, 'no 500s');
  }],
  ['/health: 503 while the model loads, 200 when ready, 503 while draining; exit 0', async () => {
    const proc = spawn(BIN, ['serve', m.model, '--port', '0', '--threads', '2', '--kv-cache-tokens', '8192'],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
    let log = '';
    const port = await new Promise((resolve, reject) => {
      proc.stderr.on('data', (d) => {
        log += d;
        const p = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
        if (p) resolve(Number(p[1]));
      });
      setTimeout(() => reject(new Error(`no port: ${log}`)), 30000);
    });
    const health = async () => (await fetch(`http://127.0.0.1:${port}/health`)).status;
    assertEq(await health(), 503, 'loading (the port opens before the model loads)');
    await waitFor(async () => (await health()) === 200, 'ready', 30000);
    const body = { model: 'model', prompt: 'x', max_tokens: 100, ignore_eos: true, stream: true };
    const stream = await fetch(`http://127.0.0.1:${port}/v1/completions`, { method: 'POST',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const reader = stream.body.getReader();
    let got = '';
    while (!got.includes('"text"')) got += new TextDecoder().decode((await reader.read()).value ?? new Uint8Array());
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()))
      .includes('vllm:num_requests_running{model_name="model"} 1'), 'the engine shows the stream');
    proc.kill('SIGTERM');
    await waitFor(async () => (await health()) === 503, 'draining');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      got += new TextDecoder().decode(value);
    }
    assert(got.trimEnd().endsWith('data: [DONE]'), 'the in-flight stream finished');
    assertEq(await exited, 0, 'exit status');
  }],
], async () => {
  await srv.stop();
  m.cleanup();
});
