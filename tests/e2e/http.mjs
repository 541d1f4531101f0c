// The HTTP layer end to end, mostly over raw sockets (node:net) so that nothing between the test and the server
// fixes up what a hostile client sends: a header flood gets 431; a huge body gets 413 for Content-Length and for
// chunked bodies alike while the server's RSS stays far below the bytes sent; `Content-Length: -5` gets 400 at
// once; slow-drip connections are cut while /health stays fast; a POST that is not JSON gets 415; CSRF-shaped
// requests (a foreign Origin, a text/plain body to an admin endpoint) are refused; SSE framing ends with the
// usage chunk and [DONE]; keep-alive and pipelining answer in order; a client that disconnects at 0 ms, during
// prefill or mid-decode, streaming or not, frees everything (running, waiting, KV back to 0 within ~1 s), and a
// non-streaming request whose client leaves after 300 ms stops generating; a second SIGTERM exits at once.
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, startServer, scrape, metric, waitFor, assert, assertEq, run, sleep } from './lib.mjs';

// The small demo model: slow enough on 2 cores that 2000 tokens take seconds (the tiny one finishes at once).
const dir = mkdtempSync(path.join(tmpdir(), 'lp-http-'));
const model = path.join(dir, 'model');
execFileSync(BIN, ['demo-model', model, '--shape', 'small'], { stdio: 'pipe' });
const MAX_BODY = 4 << 20;
const srv = await startServer(model, ['--max-num-seqs', '4', '--max-request-bytes', String(MAX_BODY),
  '--allow-runtime-lora-updating', '--enable-lora', '--lora-root', dir, '--allowed-origins', 'http://good.example']);

// One raw connection: write `data` (string or Buffer, or an async function given the socket), collect the bytes
// until the server closes or `timeout` ms pass.
function raw(data, { timeout = 5000 } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect(srv.port, '127.0.0.1');
    const chunks = [];
    let done = false;
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ text, closed, ms: Date.now() - t0, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0) });
    };
    const timer = setTimeout(() => finish(false), timeout);
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => finish(true));
    s.on('close', () => finish(true));
    s.on('error', () => {});  // a reset after the reply: the reply is what counts
    s.on('connect', async () => {
      if (typeof data === 'function') await data(s);
      else s.write(data);
    });
  });
}

function request(method, target, { headers = {}, body = '' } = {}) {
  const h = { Host: 'x', ...headers };
  if (body !== '' || method === 'POST') h['Content-Length'] = Buffer.byteLength(body);
  return `${method} ${target} HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
}
const json = () => ({ 'Content-Type': 'application/json', 'Connection': 'close' });

// The body of a chunked response, de-chunked.
function dechunk(text) {
  let rest = text.slice(text.indexOf('\r\n\r\n') + 4), out = '';
  for (;;) {
    const eol = rest.indexOf('\r\n');
    const n = parseInt(rest.slice(0, eol), 16);
    if (!(n > 0)) return out;
    out += rest.slice(eol + 2, eol + 2 + n);
    rest = rest.slice(eol + 2 + n + 2);
  }
}

const rssKiB = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${srv.proc.pid}/status`, 'utf8'))[1]);

async function idleWithin(ms, what) {
  const t0 = Date.now();
  await waitFor(async () => {
    const f = await scrape(srv.url);
    const v = { running: metric(f, 'vllm:num_requests_running'), waiting: metric(f, 'vllm:num_requests_waiting'),
      kv: metric(f, 'vllm:kv_cache_usage_perc'), inflight: metric(f, 'loraplex_http_in_flight_requests') };
    return Object.values(v).every((x) => x === 0) ? true : v;
  }, `${what}: idle`, ms);
  return Date.now() - t0;
}

const completion = (extra) => JSON.stringify({ model: 'model', prompt: 'x', temperature: 0, ignore_eos: true, ...extra });

await run([
  ['a header flood gets 431; a normal request still works', async () => {
    const flood = {};
    for (let i = 0; i < 3000; i++) flood[`X-Flood-${i}`] = 'v';
    const r = await raw(request('GET', '/v1/models', { headers: flood }));
    assertEq(r.status, 431, `3000 headers: ${r.text.slice(0, 200)}`);
    const big = await raw(request('GET', '/v1/models', { headers: { 'X-Big': 'a'.repeat(64 << 10) } }));
    assertEq(big.status, 431, 'one 64 KiB header');
    assertEq((await fetch(`${srv.url}/v1/models`)).status, 200, 'still serving');
  }],
  ['Content-Length: -5 gets 400 at once', async () => {
    const r = await raw(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: -5\r\n\r\n`);
    assertEq(r.status, 400, r.text.slice(0, 200));
    assert(r.ms < 1000, `answered in ${r.ms} ms`);
  }],
  ['a huge body gets 413 (Content-Length and chunked) without growing the server by its size', async () => {
    const before = rssKiB();
    let peak = before;
    const sampler = setInterval(() => { peak = Math.max(peak, rssKiB()); }, 20);
    const piece = Buffer.alloc(64 << 10, 0x20);
    // Sends `total` bytes as fast as the socket takes them (chunked framing when asked), until the server closes.
    let sentTotal = 0;
    const frame = Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]);
    const pour = async (s, total) => {
      let closed = false;
      s.on('close', () => { closed = true; });
      for (let sent = 0; sent < total && !closed && !s.destroyed;) {
        sent += piece.length;
        sentTotal += piece.length;
        if (!s.write(frame)) {
          await new Promise((r) => {
            const done = () => { s.off('drain', done); s.off('close', done); r(); };
            s.on('drain', done);
            s.on('close', done);
          });
        }
      }
    };
    const head = (extra) => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${extra}\r\n`;
    const declared = await raw(head('Content-Length: 104857600\r\n'), { timeout: 10000 });
    assertEq(declared.status, 413, `declared 100 MB: ${declared.text.slice(0, 200)}`);
    assert(declared.ms < 1000, `refused from the head in ${declared.ms} ms`);
    // Three concurrent 100 MB chunked bodies (the issue's repro took RSS from 0.41 to 6.75 GB).
    const rs = await Promise.all([0, 1, 2].map(() => raw(async (s) => {
      s.write(head('Transfer-Encoding: chunked\r\n'));
      await pour(s, 100 << 20);
    }, { timeout: 20000 })));
    clearInterval(sampler);
    for (const r of rs) assertEq(r.status, 413, `chunked 100 MB: ${r.text.slice(0, 200)}`);
    assert(rs.every((r) => r.text.includes('RequestTooLargeError')), 'the error shape');
    const grew = (peak - before) / 1024;
    console.log(`     RSS ${Math.round(before / 1024)} MiB -> peak ${Math.round(peak / 1024)} MiB; ` +
      `${Math.round(sentTotal / (1 << 20))} MiB of chunked bodies written before the 413s came`);
    assert(grew < 64, `RSS grew by ${grew.toFixed(0)} MiB (limit ${MAX_BODY >> 20} MiB per body)`);
    assertEq((await fetch(`${srv.url}/health`)).status, 200, 'healthy');
  }],
  ['slow-drip connections are cut; /health stays fast meanwhile', async () => {
    const head = `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{"prompt":"x"}      `;
    const drips = Array.from({ length: 10 }, () => raw(async (s) => {
      for (let i = 0; i < head.length && !s.destroyed; i++) {
        s.write(head[i]);
        await sleep(1000);
      }
    }, { timeout: 20000 }));
    await sleep(300);
    const lat = [];
    for (let i = 0; i < 8; i++) {
      const t0 = Date.now();
      assertEq((await fetch(`${srv.url}/health`)).status, 200, '/health');
      lat.push(Date.now() - t0);
      await sleep(250);
    }
    console.log(`     /health with 10 drips: max ${Math.max(...lat)} ms`);
    assert(Math.max(...lat) < 300, `/health latencies ${lat}`);
    const rs = await Promise.all(drips);
    assert(rs.every((r) => r.closed), 'every drip connection was closed by the server');
    assert(rs.every((r) => r.ms < 13000), `cut at the 10 s head deadline: ${rs.map((r) => r.ms)}`);
  }],
  ['a POST that is not JSON gets 415', async () => {
    const r = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'text/plain' },
      body: completion({ max_tokens: 1 }) });
    assertEq(r.status, 415, 'text/plain');
    assert((await r.json()).error.message.includes('application/json'), 'says what is expected');
    const ok = await fetch(`${srv.url}/v1/completions`, { method: 'POST',
      headers: { 'Content-Type': 'Application/JSON; charset=utf-8' }, body: completion({ max_tokens: 1 }) });
    assertEq(ok.status, 200, 'media type parameters and case are fine');
  }],
  ['CSRF-shaped requests are refused; allowed origins get CORS', async () => {
    const body = JSON.stringify({ lora_name: 'evil', lora_path: dir });
    const evil = await raw(request('POST', '/v1/load_lora_adapter',
      { headers: { 'Origin': 'http://evil.example', 'Content-Type': 'text/plain', 'Connection': 'close' }, body }));
    assertEq(evil.status, 403, `cross-site text/plain form post: ${evil.text.slice(0, 300)}`);
    const evilJson = await raw(request('POST', '/v1/load_lora_adapter',
      { headers: { 'Origin': 'http://evil.example', 'Content-Type': 'application/json', 'Connection': 'close' }, body }));
    assertEq(evilJson.status, 403, 'a foreign origin with a JSON body');
    const plain = await raw(request('POST', '/v1/load_lora_adapter',
      { headers: { 'Content-Type': 'text/plain', 'Connection': 'close' }, body }));
    assertEq(plain.status, 415, 'text/plain without an Origin');
    const models = await (await fetch(`${srv.url}/v1/models`)).json();
    assertEq(models.data.map((d) => d.id), ['model'], 'nothing was loaded');
    const pre = await raw(request('OPTIONS', '/v1/completions', { headers: { 'Origin': 'http://good.example',
      'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type', 'Connection': 'close' } }));
    assertEq(pre.status, 204, 'preflight from an allowed origin');
    assert(/access-control-allow-origin: http:\/\/good\.example/i.test(pre.text), pre.text);
    const good = await raw(request('POST', '/v1/completions', { headers: { 'Origin': 'http://good.example',
      'Content-Type': 'application/json', 'Connection': 'close' }, body: completion({ max_tokens: 1 }) }));
    assertEq(good.status, 200, 'allowed origin');
    assert(/access-control-allow-origin: http:\/\/good\.example/i.test(good.text), 'CORS header');
  }],
  ['SSE framing: chunks, the usage chunk, then [DONE]', async () => {
    const r = await raw(request('POST', '/v1/completions', { headers: json(),
      body: completion({ max_tokens: 5, stream: true, stream_options: { include_usage: true } }) }));
    assertEq(r.status, 200, r.text.slice(0, 200));
    assert(/content-type: text\/event-stream/i.test(r.text) && /transfer-encoding: chunked/i.test(r.text), 'head');
    const body = dechunk(r.text);
    assert(body.endsWith('\n\n'), 'events end with a blank line');
    const events = body.split('\n\n').filter((e) => e !== '');
    const data = events.filter((e) => !e.startsWith(':')).map((e) => { assert(e.startsWith('data: '), e); return e.slice(6); });
    assertEq(data[data.length - 1], '[DONE]', 'ends with [DONE]');
    const usage = JSON.parse(data[data.length - 2]);
    assertEq([usage.choices, usage.usage.completion_tokens], [[], 5], 'the usage chunk before [DONE]');
    const chunks = data.slice(0, -2).map((d) => JSON.parse(d));
    assert(chunks.every((c) => c.object === 'text_completion' && c.usage === null), 'chunks carry usage: null');
    assertEq(chunks[chunks.length - 1].choices[0].finish_reason, 'length', 'finish reason');
  }],
  ['keep-alive and pipelining: two requests in one write, two responses in order', async () => {
    const a = request('POST', '/v1/completions', { headers: { 'Content-Type': 'application/json' },
      body: completion({ max_tokens: 40 }) });
    const b = request('POST', '/v1/completions', { headers: json(), body: completion({ max_tokens: 2 }) });
    const r = await raw(a + b);
    const heads = [...r.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    assertEq(heads, ['200', '200'], 'two responses');
    const usages = [...r.text.matchAll(/"completion_tokens":(\d+)/g)].map((m) => Number(m[1]));
    assertEq(usages, [40, 2], 'in request order (the slow one first)');
    // Keep-alive: a second request on the same connection after the first response.
    const two = await raw(async (s) => {
      s.write(request('GET', '/v1/models'));
      await new Promise((res) => s.once('data', res));
      s.write(request('GET', '/health', { headers: { Connection: 'close' } }));
    });
    assertEq([...two.text.matchAll(/HTTP\/1\.1 200/g)].length, 2, 'two responses on one connection');
  }],
  ['a client gone at 0 ms / in prefill / mid-decode, streaming or not, frees everything', async () => {
    const longPrompt = Array.from({ length: 3000 }, (_, i) => 10 + (i % 200));
    const cases = [
      ['0 ms, stream', completion({ max_tokens: 500, stream: true }), async () => {}],
      ['0 ms, non-stream', completion({ max_tokens: 500 }), async () => {}],
      ['prefill, stream', completion({ prompt: longPrompt, max_tokens: 500, stream: true }), () => sleep(30)],
      ['prefill, non-stream', completion({ prompt: longPrompt, max_tokens: 500 }), () => sleep(30)],
      ['mid-decode, stream', completion({ max_tokens: 2000, stream: true }), null],
      ['mid-decode, non-stream', completion({ max_tokens: 2000 }), () => sleep(300)],
    ];
    for (const [what, body, wait] of cases) {
      const f0 = await scrape(srv.url);
      await raw(async (s) => {
        s.write(request('POST', '/v1/completions', { headers: { 'Content-Type': 'application/json' }, body }));
        if (wait) await wait();
        else await new Promise((res) => { let got = ''; s.on('data', (d) => { got += d; if (got.includes('"text"')) res(); }); });
        s.destroy();
      });
      const ms = await idleWithin(1500, what);
      const f1 = await scrape(srv.url);
      const gen = metric(f1, 'loraplex_generation_tokens_total') - metric(f0, 'loraplex_generation_tokens_total');
      const aborted = metric(f1, 'loraplex_request_aborted_total') - metric(f0, 'loraplex_request_aborted_total');
      console.log(`     ${what}: idle after ${ms} ms, ${gen} tokens generated, aborted ${aborted}`);
      assert(gen < 1000, `${what}: stopped early (generated ${gen})`);
      // At 0 ms the request may never reach a handler (skipped once its client is gone): nothing to count.
      if (what.startsWith('0 ms')) assert(aborted <= 1, `${what}: aborted ${aborted}`);
      else assertEq(aborted, 1, `${what}: counted as aborted`);
    }
    const r = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: completion({ max_tokens: 3 }) });
    assertEq((await r.json()).usage.completion_tokens, 3, 'still serving');
  }],
  ['a second SIGTERM exits at once instead of waiting for the drain', async () => {
    const other = await startServer(model, ['--shutdown-timeout', '60']);
    const res = await fetch(`${other.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: completion({ max_tokens: 4000, stream: true }) });
    const reader = res.body.getReader();
    await reader.read();  // the stream is running
    // ... and the engine's published stats say so (Engine::shutdown decides idleness from them: a SIGTERM that
    // lands before the first step's stats are published finds the engine "idle" and drops the stream).
    await waitFor(async () => metric(await scrape(other.url), 'vllm:num_requests_running') === 1, 'running 1', 2000);
    other.proc.kill('SIGTERM');
    await sleep(300);
    assertEq(other.proc.exitCode, null, `the first SIGTERM drains (the stream still runs)\n${other.log().slice(-1500)}`);
    const t0 = Date.now();
    other.proc.kill('SIGTERM');
    const { code } = await other.exited;
    assertEq(code, 128 + 15, `exit status\n${other.log().slice(-2000)}`);
    assert(Date.now() - t0 < 2000, `exited ${Date.now() - t0} ms after the second SIGTERM`);
    reader.cancel().catch(() => {});
  }],
], async () => { await srv.stop(); rmSync(dir, { recursive: true, force: true }); });
