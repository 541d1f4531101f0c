// End to end against a real `loraplex serve` (tiny demo model, 3 demo adapters): the vLLM-named metrics
// agree with what the clients were told (after N requests, one on an adapter: vllm:request_success_total
// sums to N, vllm:prompt_tokens_total / generation_tokens_total equal the sums of usage, the latency
// histograms count N, vllm:lora_requests_by_adapter counts the adapter's request) in exposition text with
// one HELP/TYPE per family; /tokenize and /detokenize against the reference tokenizer (transformers.js on the
// model's own tokenizer.json) and the reference chat-template renderer (@huggingface/jinja), with the
// messages form counting what a chat completion reports as prompt_tokens; /version equals
// `loraplex --version`; the API key guards /tokenize and /detokenize but not /version; a weighted route
// (--lora-route) answers with the output of the arm its x-loraplex-adapter header names, sticky per user,
// listed in /v1/models and counted, and a bad --lora-route stops the start naming the flag.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, makeModel, startServer, scrape, metric, assert, assertEq, run, waitFor } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { loadTokenizer } = await import(path.join(here, '..', 'fixtures', 'tokenizer', 'load_tokenizer.mjs'));
const require = createRequire(path.join(process.env.LP_NPM_DIR, 'package.json'));
const { Template } = await import(require.resolve('@huggingface/jinja').replace(/\.cjs$/, '.js'));

const m = makeModel(3);
const srv = await startServer(m.model, ['--served-model-name', 'tiny', '--lora-modules',
  `medical-qa=${m.adapterDir('medical-qa')}`, `legal-summary=${m.adapterDir('legal-summary')}`, '--max-model-len', '256',
  '--lora-route', 'assistant=medical-qa:1,legal-summary:1']);
const client = srv.client();
const post = async (url, p, body, headers = {}) => {
  const r = await fetch(`${url}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
};
const ref = loadTokenizer(m.model);
const tokConfig = JSON.parse(readFileSync(path.join(m.model, 'tokenizer_config.json'), 'utf8'));
// id -> token string, from tokenizer.json itself (what vLLM's convert_ids_to_tokens answers).
const tokJson = JSON.parse(readFileSync(path.join(m.model, 'tokenizer.json'), 'utf8'));
const idToToken = new Map(Object.entries(tokJson.model.vocab).map(([t, id]) => [id, t]));
for (const a of tokJson.added_tokens) idToToken.set(a.id, a.content);
const MODEL = { model_name: 'tiny' };

// One sample of the raw exposition text (exact label set), or undefined. parse-prometheus-text-format folds
// the series of a labelled histogram into one and drops their _count, so histograms are read here.
function rawSample(text, name, labels) {
  for (const line of text.split('\n')) {
    const mm = /^([^\s{]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!mm || mm[1] !== name) continue;
    const got = {};
    for (const l of (mm[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) got[l[1]] = l[2];
    if (JSON.stringify(Object.entries(got).sort()) === JSON.stringify(Object.entries(labels).sort())) return Number(mm[3]);
  }
  return undefined;
}

await run([
  ['vLLM metrics agree with the usage the clients saw', async () => {
    let prompt = 0, completion = 0, n = 0;
    const add = (u) => { prompt += u.prompt_tokens; completion += u.completion_tokens; n++; };
    for (const p of ['Hello world', 'The quick brown fox']) {
      add((await client.completions.create({ model: 'tiny', prompt: p, max_tokens: 5, temperature: 0, ignore_eos: true })).usage);
    }
    const s = await client.completions.create({ model: 'tiny', prompt: 'streamed', max_tokens: 4, stream: true,
      stream_options: { include_usage: true }, temperature: 0, ignore_eos: true });
    for await (const c of s) if (c.usage) add(c.usage);
    add((await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi there' }],
      max_tokens: 3, temperature: 0 })).usage);
    add((await client.completions.create({ model: 'medical-qa', prompt: 'Symptoms of flu', max_tokens: 6,
      temperature: 0, ignore_eos: true })).usage);
    assertEq(n, 5, 'five requests with usage');
    // Engine counters are published after each step and the handler records a request's end as it answers:
    // wait until every one of them is in.
    let fams;
    const successes = (f) => (f['vllm:request_success_total']?.metrics ?? [])
      .filter((x) => x.labels.model_name === 'tiny').reduce((a, x) => a + Number(x.value), 0);
    await waitFor(async () => {
      fams = await scrape(srv.url);
      const got = [successes(fams), metric(fams, 'vllm:prompt_tokens_total', MODEL),
        metric(fams, 'vllm:generation_tokens_total', MODEL)];
      return JSON.stringify(got) === JSON.stringify([n, prompt, completion]) || got;
    }, 'vllm counters to reach the usage totals');
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    for (const h of ['vllm:e2e_request_latency_seconds', 'vllm:time_to_first_token_seconds',
      'vllm:request_queue_time_seconds']) {
      assertEq(fams[h]?.type, 'HISTOGRAM', `${h} is a histogram`);
      assertEq(rawSample(text, `${h}_count`, MODEL), n, `${h} counts every request`);
      assertEq(rawSample(text, `${h}_bucket`, { ...MODEL, le: '+Inf' }), n, `${h} +Inf bucket`);
    }
    // Every token after each request's first is one inter-token gap.
    for (const h of ['vllm:inter_token_latency_seconds', 'vllm:time_per_output_token_seconds'])
      assertEq(rawSample(text, `${h}_count`, MODEL), completion - n, `${h}: inter-token gaps`);
    assertEq(metric(fams, 'vllm:lora_requests_by_adapter', { model_name: 'tiny', adapter: 'medical-qa' }), 1,
      'the adapter request');
    assertEq(fams['vllm:lora_requests_by_adapter'].type, 'COUNTER', 'lora_requests_by_adapter is a counter');
    // The adapter request loaded medical-qa into a slot (--lora-modules had put it in host memory).
    assert(metric(fams, 'vllm:lora_adapter_load_total', { model_name: 'tiny', source: 'host' }) >= 1, 'a slot load');
    for (const source of ['disk', 'host']) {
      assertEq(metric(fams, 'vllm:lora_adapter_load_total', { model_name: 'tiny', source }),
        metric(fams, 'loraplex_lora_adapter_load_total', { source }), `vllm and loraplex load counts (${source})`);
      assertEq(rawSample(text, 'vllm:lora_adapter_load_duration_ms_count', { model_name: 'tiny', source }),
        metric(fams, 'vllm:lora_adapter_load_total', { model_name: 'tiny', source }), `one duration per load (${source})`);
    }
    assertEq(fams['vllm:lora_adapter_load_duration_ms'].type, 'HISTOGRAM', 'load duration is a histogram');
    assertEq(fams['vllm:lora_adapters_active'].type, 'GAUGE', 'adapters active is a gauge');
    // Each admission looks its prompt up in the prefix cache (no request here is preempted).
    assertEq(metric(fams, 'vllm:prefix_cache_queries_total', MODEL), prompt, 'prefix cache queries');
    // The loraplex_* series are still there and agree.
    assertEq(metric(fams, 'loraplex_prompt_tokens_total'), prompt, 'loraplex prompt tokens');
    // One HELP and one TYPE per family in the raw text.
    const seen = new Map();
    for (const line of text.split('\n')) {
      const mm = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (!mm) continue;
      const k = `${mm[1]} ${mm[2]}`;
      assert(!seen.has(k), `a second ${k}`);
      seen.set(k, true);
    }
  }],
  ['tokenize and detokenize match the reference tokenizer and round-trip', async () => {
    for (const text of ['Hello, world!', '  spaces\tand\nlines', 'naïve café 東京 🚀']) {
      const r = await post(srv.url, '/tokenize', { model: 'tiny', prompt: text, return_token_strs: true });
      assertEq(r.status, 200, `tokenize ${text}`);
      assertEq(r.body.tokens, Array.from(ref.encode(text)), `ids of ${JSON.stringify(text)}`);
      assertEq(r.body.count, r.body.tokens.length, 'count');
      assertEq(r.body.max_model_len, 256, 'max_model_len');
      assertEq(r.body.token_strs, r.body.tokens.map((id) => idToToken.get(id)), 'token_strs');
      const p = await post(srv.url, '/tokenize', { model: 'medical-qa', prompt: text, add_special_tokens: false });
      assertEq(p.body.tokens, Array.from(ref.encode(text, { add_special_tokens: false })), 'ids without specials');
      const d = await post(srv.url, '/detokenize', { model: 'tiny', tokens: p.body.tokens });
      assertEq(d, { status: 200, body: { prompt: text } }, 'round trip');
    }
  }],
  ['the messages form is the chat template rendered and tokenized', async () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'What is 2+2?' }];
    const special = {};
    for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      if (typeof tokConfig[k] === 'string') special[k] = tokConfig[k];
    }
    const rendered = new Template(tokConfig.chat_template).render({ messages, add_generation_prompt: true,
      tools: null, documents: null, ...special });
    const want = Array.from(ref.encode(rendered, { add_special_tokens: false }));
    const r = await post(srv.url, '/tokenize', { model: 'tiny', messages });
    assertEq(r.status, 200, 'tokenize messages');
    assertEq(r.body.tokens, want, 'messages form ids');
    const chat = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 1 });
    assertEq(chat.usage.prompt_tokens, r.body.count, 'a chat completion counts the same prompt');
    const bad = await post(srv.url, '/tokenize', { model: 'nope', messages });
    assertEq([bad.status, bad.body.error.param], [404, 'model'], 'unknown model');
  }],
  ['/version is the binary version', async () => {
    const v = execFileSync(BIN, ['--version'], { encoding: 'utf8' }).trim();
    const r = await (await fetch(`${srv.url}/version`)).json();
    assertEq(`loraplex ${r.version}`, v, 'version');
  }],
  ['a weighted route serves its arm\'s output, sticky per user, listed and counted', async () => {
    const gen = async (model, user, stream = false) => {
      const r = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model, prompt: 'Symptoms of flu', max_tokens: 6, temperature: 0, ignore_eos: true, user,
          stream }) });
      assertEq(r.status, 200, `${model} for ${user}`);
      return { arm: r.headers.get('x-loraplex-adapter'), body: stream ? await r.text() : await r.json() };
    };
    const direct = { 'medical-qa': (await gen('medical-qa')).body.choices[0].text,
      'legal-summary': (await gen('legal-summary')).body.choices[0].text };
    assert(direct['medical-qa'] !== direct['legal-summary'], 'the two adapters answer differently');
    const count = { 'medical-qa': 0, 'legal-summary': 0 };
    for (let u = 0; u < 12; u++) {
      const r = await gen('assistant', `user-${u}`);
      assert(r.arm in direct, `an arm in the header: ${r.arm}`);
      assertEq(r.body.model, 'assistant', 'the model as asked');
      assertEq(r.body.choices[0].text, direct[r.arm], `user-${u}: the output of ${r.arm}`);
      assertEq((await gen('assistant', `user-${u}`, true)).arm, r.arm, `user-${u} streams from the same arm`);
      count[r.arm] += 2;
    }
    assert(count['medical-qa'] > 0 && count['legal-summary'] > 0, `both arms used: ${JSON.stringify(count)}`);
    const listed = (await client.models.list()).data.find((x) => x.id === 'assistant');
    assertEq(listed.loraplex_route, { arms: [{ adapter: 'medical-qa', weight: 1 }, { adapter: 'legal-summary', weight: 1 }] },
      'listed with its arms');
    const fams = await scrape(srv.url);
    for (const arm of Object.keys(count))
      assertEq(metric(fams, 'loraplex_route_requests_total', { route: 'assistant', adapter: arm }), count[arm], `${arm} counted`);
    for (const [route, want] of [['x=medical-qa', "--lora-route 'x=medical-qa': arm 'medical-qa' of route 'x' has no weight"],
      ['x=medical-qa:1,nope:1', "--lora-route 'x=medical-qa:1,nope:1': adapter 'nope' (an arm of route 'x') is not registered"]]) {
      const p = spawnSync(BIN, ['serve', m.model, '--port', '0', '--threads', '2', '--lora-modules',
        `medical-qa=${m.adapterDir('medical-qa')}`, '--lora-route', route], { encoding: 'utf8', timeout: 30000 });
      assertEq(p.status, 1, `a bad --lora-route stops the start: ${p.stderr}`);
      assert(p.stderr.includes(want), `says why: ${p.stderr}`);
    }
  }],
  ['the API key guards /tokenize and /detokenize, not /version', async () => {
    const keyed = await startServer(m.model, ['--api-key', 'sekret']);
    try {
      assertEq((await post(keyed.url, '/tokenize', { prompt: 'x' })).status, 401, 'tokenize without key');
      assertEq((await post(keyed.url, '/detokenize', { tokens: [1] })).status, 401, 'detokenize without key');
      const auth = { Authorization: 'Bearer sekret' };
      assertEq((await post(keyed.url, '/tokenize', { prompt: 'x' }, auth)).status, 200, 'tokenize with key');
      assertEq((await fetch(`${keyed.url}/version`)).status, 200, 'version is open');
    } finally {
      await keyed.stop();
    }
  }],
], async () => {
  await srv.stop();
  m.cleanup();
});
