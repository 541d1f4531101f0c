// Concurrency and adapter churn end to end:
//   - 32 concurrent greedy requests over 8 adapters + the base give exactly the text each gets alone;
//   - 256 concurrent streaming clients all complete;
//   - churn: max_loras 2, max_cpu_loras 3, 10 adapters, interleaved concurrent requests all succeed with each
//     adapter's solo output, and /metrics shows the loads (disk and host) and evictions (slot and host);
//   - `loraplex bench serve` (power-law popularity, Poisson arrivals) against the churn server reports every
//     request as succeeded and counts the adapter requests it made from /metrics.
import { execFileSync } from 'node:child_process';
import { makeModel, startServer, scrape, metric, assert, assertEq, run, greedy, ADAPTERS, BIN } from './lib.mjs';

const m = makeModel(10);
const mods = (names) => names.map((n) => `${n}=${m.adapterDir(n)}`);
const wide = await startServer(m.model, ['--served-model-name', 'base', '--lora-modules', ...mods(ADAPTERS.slice(0, 8)),
  '--max-loras', '8', '--max-lora-rank', '16', '--max-num-seqs', '64']);
const churn = await startServer(m.model, ['--served-model-name', 'base', '--lora-modules', ...mods(ADAPTERS),
  '--max-loras', '2', '--max-cpu-loras', '3', '--max-lora-rank', '16', '--max-num-seqs', '16']);

const prompts = ['Hello', 'The cat sat on', 'def main():', 'Summarize the contract', 'Bonjour, je', 'SELECT * FROM',
  'Once upon a time', 'Patient presents with'];

// Solo outputs, one request at a time.
async function solo(client, jobs) {
  const out = [];
  for (const [model, prompt] of jobs) out.push(await greedy(client, model, prompt, 12));
  return out;
}

await run([
  ['32 concurrent greedy requests equal their solo outputs (8 adapters + base)', async () => {
    const c = wide.client();
    const models = ['base', ...ADAPTERS.slice(0, 8)];
    const jobs = Array.from({ length: 32 }, (_, i) => [models[i % models.length], prompts[(i * 3) % prompts.length]]);
    const alone = await solo(c, jobs);
    assert(new Set(alone).size > 8, 'the outputs differ by adapter and prompt');
    const together = await Promise.all(jobs.map(([model, prompt]) => greedy(c, model, prompt, 12)));
    for (let i = 0; i < jobs.length; i++) assertEq(together[i], alone[i], `job ${i} ${jobs[i]}`);
  }],
  ['256 concurrent streaming clients all finish', async () => {
    const c = wide.client();
    const models = ['base', ...ADAPTERS.slice(0, 8)];
    const one = async (i) => {
      const s = await c.completions.create({ model: models[i % models.length], prompt: prompts[i % prompts.length],
        max_tokens: 6, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } });
      let usage = null;
      for await (const ch of s) if (ch.usage) usage = ch.usage;
      return usage.completion_tokens;
    };
    const t0 = Date.now();
    const n = await Promise.all(Array.from({ length: 256 }, (_, i) => one(i)));
    assertEq(n.filter((x) => x === 6).length, 256, 'every stream got all its tokens');
    console.log(`     256 streams in ${Date.now() - t0} ms`);
  }],
  ['churn: 10 adapters through 2 slots and 3 host places, interleaved, right outputs', async () => {
    const c = churn.client();
    const jobs = [];
    for (let round = 0; round < 3; round++)
      for (let i = 0; i < ADAPTERS.length; i++) jobs.push([ADAPTERS[(i * 7 + round) % ADAPTERS.length], prompts[(i + round) % prompts.length]]);
    jobs.push(['base', 'Hello'], ['base', 'def main():']);
    const alone = await solo(c, jobs);
    const f0 = await scrape(churn.url);
    const together = await Promise.all(jobs.map(([model, prompt]) => greedy(c, model, prompt, 12)));
    for (let i = 0; i < jobs.length; i++) assertEq(together[i], alone[i], `job ${i} ${jobs[i]}`);
    const f1 = await scrape(churn.url);
    const d = (name, labels) => metric(f1, name, labels) - metric(f0, name, labels);
    const loads = { disk: d('loraplex_lora_adapter_load_total', { source: 'disk' }), host: d('loraplex_lora_adapter_load_total', { source: 'host' }) };
    const evicts = { slot: d('loraplex_lora_adapter_evict_total', { tier: 'slot' }), host: d('loraplex_lora_adapter_evict_total', { tier: 'host' }) };
    console.log(`     interleaved: loads ${JSON.stringify(loads)}, evictions ${JSON.stringify(evicts)}`);
    // The lower bounds: the phase starts with 2 adapters in slots and 3 on the host (the last ones used alone),
    // and needs all 10, so at least 8 host -> slot copies (each evicting a slot) and 7 disk loads (each
    // evicting a host place).
    assert(loads.disk >= 7 && loads.host >= 8, `loads from disk and host: ${JSON.stringify(loads)}`);
    assert(evicts.slot >= 8 && evicts.host >= 7, `evictions from slots and host: ${JSON.stringify(evicts)}`);
    assert(metric(f1, 'loraplex_lora_adapters_active', { tier: 'slot' }) <= 2, 'at most 2 in slots');
    assert(metric(f1, 'loraplex_lora_adapters_active', { tier: 'host' }) <= 3, 'at most 3 on the host');
    assertEq(metric(f1, 'loraplex_lora_adapter_load_failures_total'), 0, 'no failed loads');
    assertEq(metric(f1, 'loraplex_lora_slots_held'), 0, 'no holds left');
  }],
  ['bench serve: an S-LoRA workload completes and its report adds up', async () => {
    let out;
    try {
      out = execFileSync(BIN, ['bench', 'serve', '--url', churn.url, '--num-requests', '40', '--rate', '200',
        '--alpha', '1.2', '--input-len', '4:12', '--output-len', '2:6', '--json'], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      throw new Error(`bench serve failed (${e.status}):\n${e.stdout}\n${e.stderr}`);
    }
    const r = JSON.parse(out);
    assertEq([r.requests, r.succeeded, r.failed], [40, 40, 0], `all requests succeed: ${out}`);
    assertEq(r.adapters, 10, 'every listed adapter is in the workload');
    assertEq(r.adapter_requests, 40, 'adapter requests counted by the server');
    assert(r.adapter_slot_hit_rate >= 0 && r.adapter_slot_hit_rate <= 1, 'hit rate is a fraction');
    assert(r.ttft_p50_s > 0 && r.ttft_p99_s >= r.ttft_p50_s && r.output_token_throughput > 0, `latencies: ${out}`);
  }],
], async () => { await wide.stop(); await churn.stop(); m.cleanup(); });
