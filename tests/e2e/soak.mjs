// Soak, bounded in time (SOAK_SECONDS, at most 180): against one real `loraplex serve`, at the same time
//   - adapter churn: load a fresh name from --lora-root, use it, unload it (and an unload while it runs);
//   - disconnects: streaming and non-streaming requests abandoned at 0-60 ms;
//   - floods from two tenants (an adapter and the base model) over their --max-waiting-per-adapter cap;
//   - a checker whose greedy outputs must equal the ones computed alone before the soak.
// Afterwards: no reply was a 5xx (429 is the only refusal allowed), every gauge is back to its idle value, and
// (outside sanitizer builds, where the allocator keeps freed memory) RSS is within 10% of where it stood after
// the warm-up round.
import { readFileSync } from 'node:fs';
import { makeModel, startServer, scrape, metric, waitFor, assert, assertEq, run, greedy, sleep, ADAPTERS } from './lib.mjs';

const SECONDS = Math.min(180, Number(process.env.SOAK_SECONDS ?? 150));
const SANITIZED = process.env.LP_SANITIZED === '1';
// smol, not tiny: RSS "within 10%" should measure leaks, not allocator noise on a 13 MB process.
const m = makeModel(10, 'smol');
const root = `${m.model}/adapters`;
const srv = await startServer(m.model, ['--served-model-name', 'base', '--lora-modules',
  ...ADAPTERS.slice(0, 4).map((n) => `${n}=${m.adapterDir(n)}`), '--max-loras', '2', '--max-cpu-loras', '4',
  '--max-lora-rank', '16', '--max-num-seqs', '8', '--max-waiting', '64', '--max-waiting-per-adapter', '16',
  '--kv-cache-tokens', '8192', '--allow-runtime-lora-updating', '--lora-root', root]);
const client = srv.client();

const statuses = new Map();  // status -> count
const count = (s) => statuses.set(s, (statuses.get(s) ?? 0) + 1);
const post = (p, body, signal) => fetch(`${srv.url}${p}`, { method: 'POST', signal,
  headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${srv.proc.pid}/status`, 'utf8'))[1]);

async function idle() {
  const f = await scrape(srv.url);
  const v = { running: metric(f, 'vllm:num_requests_running'), waiting: metric(f, 'vllm:num_requests_waiting'),
    kv: metric(f, 'vllm:kv_cache_usage_perc'), held: metric(f, 'loraplex_lora_slots_held'),
    inflight: metric(f, 'loraplex_http_in_flight_requests') };
  return Object.values(v).every((x) => x === 0) ? true : v;
}

// One request whose status is recorded; errors of the client's own making (aborts) are not replies.
async function send(p, body, abortAfterMs) {
  const ctl = new AbortController();
  const timer = abortAfterMs === undefined ? null : setTimeout(() => ctl.abort(), abortAfterMs);
  try {
    const r = await post(p, body, ctl.signal);
    count(r.status);
    await r.text();
    return r.status;
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
    return 'aborted';
  } finally {
    if (timer) clearTimeout(timer);
  }
}

const checks = [['base', 'The cat sat on'], [ADAPTERS[0], 'Hello'], [ADAPTERS[2], 'def main():']];
// The checker is a polite client: a 429 (a cap the floods filled) is retried after its Retry-After.
async function checked(model, prompt) {
  for (;;) {
    try {
      const text = await greedy(client, model, prompt, 12);
      count(200);
      return text;
    } catch (e) {
      if (e.status !== 429) throw e;
      count(429);
      await sleep(1000 * Number(e.headers?.get?.('retry-after') ?? 1));
    }
  }
}
let expected;

async function round(deadline, i) {
  const jobs = [];
  // Churn: a fresh registration name each round, from a folder under --lora-root.
  jobs.push((async () => {
    const name = `churn-${i}`;
    const dir = `${root}/${ADAPTERS[4 + (i % 6)]}`;
    const l = await send('/v1/load_lora_adapter', { lora_name: name, lora_path: dir });
    assertEq(l, 200, `load ${name}`);
    const use = send('/v1/completions', { model: name, prompt: 'churn', max_tokens: 16, ignore_eos: true });
    await sleep(5);
    assertEq(await send('/v1/unload_lora_adapter', { lora_name: name }), 200, `unload ${name} (maybe in use)`);
    const u = await use;
    assert(u === 200 || u === 404, `a request racing its adapter's unload: ${u}`);
  })());
  // Disconnects.
  for (let k = 0; k < 6; ++k) {
    const stream = k % 2 === 0;
    jobs.push(send('/v1/completions', { model: k % 3 ? ADAPTERS[k % 4] : 'base', prompt: 'bye', max_tokens: 200,
      ignore_eos: true, stream }, (k * 13 + i) % 60));
  }
  // Floods from two tenants.
  for (const tenant of [ADAPTERS[1], 'base'])
    for (let k = 0; k < 24; ++k)
      jobs.push(send('/v1/completions', { model: tenant, prompt: 'flood', max_tokens: 8, ignore_eos: true }));
  // The checker.
  jobs.push((async () => {
    for (let k = 0; k < checks.length; ++k)
      assertEq(await checked(...checks[k]), expected[k], `round ${i}: ${checks[k]}`);
  })());
  await Promise.all(jobs);
  assert(Date.now() < deadline + 60000, 'a round ran far past the deadline');
}

await run([
  ['soak: churn, disconnects and two-tenant floods; no 5xx, gauges back, RSS steady', async () => {
    expected = [];
    for (const c of checks) expected.push(await greedy(client, ...c, 12));
    const deadline = Date.now() + SECONDS * 1000;
    await round(deadline, 0);  // warm-up: every path has allocated what it keeps
    await waitFor(idle, 'idle after the warm-up', 20000);
    const rss0 = rssKb();
    let rounds = 1;
    const trace = [];
    while (Date.now() < deadline) {
      await round(deadline, rounds++);
      trace.push(rssKb());
    }
    await waitFor(idle, 'idle after the soak', 20000);
    const rss1 = rssKb();
    const five = [...statuses].filter(([s]) => s >= 500);
    assertEq(five, [], 'no 5xx replies');
    const other = [...statuses].filter(([s]) => ![200, 404, 429].includes(s));
    assertEq(other, [], 'only 200, 429 (caps) and 404 (unloaded while racing) replies');
    assert((statuses.get(429) ?? 0) > 0, 'the floods went over the caps');
    const f = await scrape(srv.url);
    assertEq(metric(f, 'loraplex_lora_adapters_active', { tier: 'registered' }), 4, 'only the --lora-modules remain');
    console.log(`soak: ${rounds} rounds in ${SECONDS} s, replies ${JSON.stringify([...statuses])}, RSS ${rss0} -> ${rss1} kB (per round: ${trace.join(' ')})`);
    if (!SANITIZED) assert(rss1 <= rss0 * 1.1, `RSS grew from ${rss0} to ${rss1} kB`);
  }],
], async () => {
  await srv.stop();
  m.cleanup();
});
