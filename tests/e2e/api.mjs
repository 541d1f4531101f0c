// End to end with the official `openai` client against a real `loraplex serve` (tiny demo model, 10 demo
// adapters): completions and chat, streaming and not, n, stop, seed, logprobs, include_usage, /v1/models with
// parents, load -> use -> unload, every error class, --lora-root traversal and symlink escapes, the resolver,
// /metrics as Prometheus text, auth on, queue-full 503, and SIGTERM draining (in-flight finishes, exit 0).
import { symlinkSync, mkdirSync, cpSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeModel, startServer, scrape, metric, assert, assertEq, expectError, run, greedy, sleep, OpenAI } from './lib.mjs';

const m = makeModel(10);
const root = path.join(m.model, 'adapters');
// A broken adapter (rank over --max-lora-rank) and a symlink that leaves the root.
cpSync(m.adapterDir('hr-policy'), path.join(root, 'too-big'), { recursive: true });
const cfgPath = path.join(root, 'too-big', 'adapter_config.json');
const cfg = JSON.parse((await import('node:fs')).readFileSync(cfgPath, 'utf8'));
cfg.r = 64;
writeFileSync(cfgPath, JSON.stringify(cfg));
mkdirSync(path.join(m.dir, 'outside'));
cpSync(m.adapterDir('edu-tutor'), path.join(m.dir, 'outside', 'edu'), { recursive: true });
symlinkSync(path.join(m.dir, 'outside', 'edu'), path.join(root, 'escape'));

const srv = await startServer(m.model, [
  '--served-model-name', 'tiny', '--lora-modules', `medical-qa=${m.adapterDir('medical-qa')}`,
  JSON.stringify({ name: 'legal-summary', path: m.adapterDir('legal-summary'), base_model_name: 'tiny' }),
  '--pin', 'medical-qa', '--max-loras', '2', '--max-cpu-loras', '4', '--max-lora-rank', '16', '--allow-runtime-lora-updating',
  '--lora-root', root, '--enable-lora-resolver', '--max-request-bytes', '65536', '--max-model-len', '256']);
const client = srv.client();
const post = (p, body) => fetch(`${srv.url}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: typeof body === 'string' ? body : JSON.stringify(body) });

async function streamText(params) {
  const s = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0;
  for await (const c of s) {
    chunks++;
    if (c.usage) usage = c.usage;
    if (c.choices.length === 0) continue;
    text += c.choices[0].text;
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  return { text, finish, usage, chunks };
}

await run([
  ['"adapters": per-request scale and stacking through the openai client', async () => {
    const prompt = 'The patient';
    const gen = async (body) => (await client.completions.create({ prompt, max_tokens: 12, temperature: 0,
      ignore_eos: true, ...body })).choices[0].text;
    const base = await gen({ model: 'tiny' });
    const med = await gen({ model: 'medical-qa' });
    assert(base !== med, 'the adapter changes the output');
    assertEq(await gen({ model: 'tiny', adapters: [{ name: 'medical-qa', scale: 0 }] }), base, 'scale 0 is the base');
    assertEq(await gen({ model: 'tiny', adapters: [{ name: 'medical-qa' }] }), med, 'listed at scale 1 is the adapter');
    const half = await gen({ model: 'medical-qa', adapters: [{ name: 'medical-qa', scale: 0.5 }] });
    assert(half !== med && half !== base, 'scale 0.5 is neither');
    const stackBody = { model: 'medical-qa', adapters: [{ name: 'legal-summary', scale: 1.0 }] };
    const [stack, again, plain, baseAgain] = await Promise.all([gen(stackBody), gen(stackBody), gen({ model: 'medical-qa' }),
      gen({ model: 'tiny' })]);
    assert(stack !== med && stack !== base, 'a stack of two is neither adapter alone');
    assertEq(again, stack, 'a stack is deterministic in a mixed batch');
    assertEq(plain, med, 'a plain request beside stacks is unchanged');
    assertEq(baseAgain, base, 'a base request beside stacks is unchanged');
    const e = await expectError(() => gen({ model: 'medical-qa', adapters: [{ name: 'legal-summary' }, { name: 'too-big' }] }),
      400, 'BadRequestError', 'three adapters over --max-stacked-loras 2');
    assert(e.message.includes('--max-stacked-loras'), e.message);
  }],
  ['models list the base and adapters with parents', async () => {
    const list = await client.models.list();
    const ids = list.data.map((x) => x.id);
    assertEq(ids, ['tiny', 'legal-summary', 'medical-qa'], 'model ids');
    assertEq(list.data[0].parent, null, 'base parent');
    assertEq(list.data[0].owned_by, 'loraplex', 'owned_by');
    assertEq(list.data[0].max_model_len, 256, 'max_model_len honours --max-model-len');
    assertEq(list.data[2].parent, 'tiny', 'adapter parent');
    assertEq(list.data[2].root, m.adapterDir('medical-qa'), 'adapter root');
    assertEq(list.data[2].lora.pinned, true, '--pin');
    assertEq(list.data[1].lora.pinned, false, 'not pinned');
  }],
  ['completion: usage, finish reason, streaming equals non-streaming', async () => {
    const r = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 10, temperature: 0, ignore_eos: true });
    assertEq(r.object, 'text_completion', 'object');
    assertEq(r.choices[0].finish_reason, 'length', 'finish');
    assertEq(r.usage.completion_tokens, 10, 'completion tokens');
    assert(r.usage.prompt_tokens >= 2, 'prompt tokens');
    assertEq(r.usage.total_tokens, r.usage.prompt_tokens + 10, 'total tokens');
    const s = await streamText({ model: 'tiny', prompt: 'Hello world', max_tokens: 10, temperature: 0, ignore_eos: true });
    assertEq(s.text, r.choices[0].text, 'streamed text');
    assertEq(s.finish, 'length', 'streamed finish');
    assertEq(s.usage, r.usage, 'include_usage chunk');
  }],
  ['chat: streaming equals non-streaming; adapters change the output', async () => {
    const msgs = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }];
    const r = await client.chat.completions.create({ model: 'medical-qa', messages: msgs, max_tokens: 8, temperature: 0, ignore_eos: true });
    assertEq(r.object, 'chat.completion', 'object');
    assertEq(r.choices[0].message.role, 'assistant', 'role');
    const s = await client.chat.completions.create({ model: 'medical-qa', messages: msgs, max_tokens: 8, temperature: 0,
      ignore_eos: true, stream: true, stream_options: { include_usage: true } });
    let text = '', role = null, usage = null;
    for await (const c of s) {
      if (c.usage) usage = c.usage;
      if (!c.choices.length) continue;
      role ??= c.choices[0].delta.role;
      text += c.choices[0].delta.content ?? '';
    }
    assertEq(role, 'assistant', 'first delta carries the role');
    assertEq(text, r.choices[0].message.content, 'streamed chat text');
    assertEq(usage.completion_tokens, 8, 'chat usage');
    const base = await greedy(client, 'tiny', 'Hello world');
    const med = await greedy(client, 'medical-qa', 'Hello world');
    const legal = await greedy(client, 'legal-summary', 'Hello world');
    assert(base !== med && med !== legal && base !== legal, `adapters change the text: ${JSON.stringify([base, med, legal])}`);
  }],
  ['n and seed: n choices, reproducible with a seed', async () => {
    const p = { model: 'tiny', prompt: 'Once', max_tokens: 8, temperature: 1.0, n: 3, seed: 42, ignore_eos: true };
    const a = await client.completions.create(p);
    const b = await client.completions.create(p);
    assertEq(a.choices.map((c) => c.index), [0, 1, 2], 'indices');
    assertEq(a.choices.map((c) => c.text), b.choices.map((c) => c.text), 'same seed, same texts');
    assert(new Set(a.choices.map((c) => c.text)).size > 1, 'choices use different seeds');
    assertEq(a.usage.completion_tokens, 24, 'usage sums the choices');
  }],
  ['stop strings cut the text and finish with stop', async () => {
    const full = await greedy(client, 'tiny', 'The quick brown fox', 16);
    const chars = [...full];
    const stop = chars.slice(5, 7).join('');
    const cut = full.slice(0, full.indexOf(stop));
    const r = await client.completions.create({ model: 'tiny', prompt: 'The quick brown fox', max_tokens: 16, temperature: 0, ignore_eos: true, stop: [stop] });
    assertEq(r.choices[0].text, cut, `text before the stop string ${JSON.stringify(stop)} of ${JSON.stringify(full)}`);
    assertEq(r.choices[0].finish_reason, 'stop', 'finish_reason');
    const s = await streamText({ model: 'tiny', prompt: 'The quick brown fox', max_tokens: 16, temperature: 0, ignore_eos: true, stop });
    assertEq(s.text, cut, 'streamed stop');
  }],
  ['logprobs: completions and chat shapes; greedy picks the top token', async () => {
    const r = await client.completions.create({ model: 'medical-qa', prompt: 'Hello', max_tokens: 5, temperature: 0, logprobs: 3, ignore_eos: true });
    const lp = r.choices[0].logprobs;
    assertEq(lp.tokens.length, 5, 'tokens');
    assertEq(lp.token_logprobs.length, 5, 'token_logprobs');
    assertEq(lp.text_offset.length, 5, 'text_offset');
    assertEq(lp.text_offset[0], 0, 'first offset');
    for (let i = 0; i < 5; i++) {
      const alts = Object.values(lp.top_logprobs[i]);
      assert(alts.length >= 1 && alts.length <= 4, 'top_logprobs size');
      assert(lp.token_logprobs[i] <= 0, 'logprob <= 0');
      assert(lp.token_logprobs[i] >= Math.max(...alts) - 1e-4, 'greedy token is the most likely');
    }
    const c = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 4,
      temperature: 0, logprobs: true, top_logprobs: 2, ignore_eos: true });
    const content = c.choices[0].logprobs.content;
    assertEq(content.length, 4, 'chat logprob entries');
    assertEq(content[0].top_logprobs.length, 2, 'top_logprobs');
    assert(Array.isArray(content[0].bytes) && typeof content[0].token === 'string', 'token and bytes');
  }],
  ['load -> use -> unload an adapter at runtime', async () => {
    let r = await post('/v1/load_lora_adapter', { lora_name: 'french', lora_path: m.adapterDir('french-support') });
    assertEq([r.status, await r.text()], [200, "Success: LoRA adapter 'french' added successfully."], 'load');
    const ids = (await client.models.list()).data.map((x) => [x.id, x.parent]);
    assert(ids.some(([id, parent]) => id === 'french' && parent === 'tiny'), 'listed with its parent');
    const before = await greedy(client, 'french', 'Bonjour');
    assert(before.length > 0, 'generates');
    r = await post('/v1/unload_lora_adapter', { lora_name: 'french' });
    assertEq([r.status, await r.text()], [200, "Success: LoRA adapter 'french' removed successfully."], 'unload');
    await expectError(() => greedy(client, 'french', 'Bonjour'), 404, 'NotFoundError', 'unloaded adapter');
  }],
  ['error classes from the openai client', async () => {
    const base = { model: 'tiny', prompt: 'x', max_tokens: 2 };
    for (const [bad, what] of [[{ temperature: -1 }, 'temperature'], [{ n: 0 }, 'n'], [{ max_tokens: 0 }, 'max_tokens'],
      [{ logprobs: 21 }, 'logprobs'], [{ top_p: 0 }, 'top_p'], [{ prompt: '' }, 'empty prompt']]) {
      const e = await expectError(() => client.completions.create({ ...base, ...bad }), 400, 'BadRequestError', what);
      assertEq(e.error?.type ?? e.type, 'BadRequestError', `${what}: error.type`);
    }
    await expectError(() => client.chat.completions.create({ model: 'tiny', messages: [] }), 400, 'BadRequestError', 'empty messages');
    const long = 'word '.repeat(400);
    const e = await expectError(() => client.completions.create({ ...base, prompt: long }), 400, 'BadRequestError', 'context');
    assertEq(e.code, 'context_length_exceeded', 'context error code');
    await expectError(() => client.completions.create({ ...base, model: 'no-such-model' }), 404, 'NotFoundError', 'unknown model');
    await expectError(() => client.completions.create({ ...base, prompt: 'y'.repeat(70000) }), 413, null, 'body too large');
    const bad = await post('/v1/completions', '{"model": "tiny", "prompt": ');
    assertEq(bad.status, 400, 'malformed JSON');
    const body = await bad.json();
    assert(body.error && body.error.type === 'BadRequestError' && 'param' in body.error && 'code' in body.error, 'error shape');
    assertEq((await fetch(`${srv.url}/health`)).status, 200, 'still healthy after the errors');
  }],
  ['adapter admin errors, traversal and symlink escapes under --lora-root', async () => {
    const cases = [
      [{ lora_name: 'x' }, 400, 'missing path'],
      [{ lora_name: 'medical-qa', lora_path: m.adapterDir('medical-qa') }, 400, 'duplicate name'],
      [{ lora_name: 'big', lora_path: path.join(root, 'too-big') }, 400, 'invalid adapter (rank too large)'],
      [{ lora_name: 'gone', lora_path: path.join(root, 'missing') }, 404, 'missing folder'],
      [{ lora_name: 'up', lora_path: `${root}/../../outside/edu` }, 403, 'path traversal'],
      [{ lora_name: 'up2', lora_path: '../outside/edu' }, 403, 'relative traversal'],
      [{ lora_name: 'sym', lora_path: path.join(root, 'escape') }, 403, 'symlink escape'],
      [{ lora_name: 'abs', lora_path: path.join(m.dir, 'outside', 'edu') }, 403, 'absolute path outside'],
    ];
    for (const [body, status, what] of cases) {
      const r = await post('/v1/load_lora_adapter', body);
      const j = await r.json();
      assertEq(r.status, status, `${what}: ${JSON.stringify(j)}`);
      assert(j.error && typeof j.error.message === 'string', `${what}: error shape`);
    }
    const big = await (await post('/v1/load_lora_adapter', { lora_name: 'big', lora_path: path.join(root, 'too-big') })).json();
    assert(/rank/.test(big.error.message), `validation message names the rank: ${big.error.message}`);
    assertEq((await post('/v1/unload_lora_adapter', { lora_name: 'nope' })).status, 404, 'unload unknown');
    assertEq((await post('/v1/unload_lora_adapter', {})).status, 400, 'unload without a name');
    await expectError(() => greedy(client, 'escape', 'x'), 403, 'PermissionDeniedError', 'resolver symlink escape');
  }],
  ['resolver loads an unknown adapter from --lora-root on first use', async () => {
    const t = await greedy(client, 'code-review', 'def f():');
    assert(t.length > 0, 'generated');
    const ids = (await client.models.list()).data.map((x) => x.id);
    assert(ids.includes('code-review'), 'registered by the resolver');
  }],
  ['/metrics parses as Prometheus text with the expected families', async () => {
    const f = await scrape(srv.url);
    for (const name of ['vllm:num_requests_waiting', 'vllm:num_requests_running', 'vllm:kv_cache_usage_perc',
      'vllm:lora_requests_info', 'loraplex_time_to_first_token_seconds', 'loraplex_inter_token_latency_seconds',
      'loraplex_e2e_request_latency_seconds', 'loraplex_lora_adapter_load_total', 'loraplex_lora_adapter_evict_total',
      'loraplex_lora_adapter_load_duration_ms', 'loraplex_lora_adapters_active', 'loraplex_lora_requests_total',
      'loraplex_prompt_tokens_total', 'loraplex_generation_tokens_total']) assert(f[name], `family ${name}`);
    assertEq(f['loraplex_time_to_first_token_seconds'].type, 'HISTOGRAM', 'histogram type');
    assert(metric(f, 'loraplex_time_to_first_token_seconds') > 0, 'TTFT observed');
    assert(metric(f, 'loraplex_lora_adapter_load_total', { source: 'host' }) >= 2, 'host -> slot loads counted');
    assert(metric(f, 'loraplex_lora_requests_total', { adapter: 'medical-qa' }) >= 3, 'requests per adapter');
    const info = f['vllm:lora_requests_info'].metrics[0];
    assertEq(info.labels.max_lora, '2', 'max_lora label');
    assert(Math.abs(Number(info.value) - Date.now() / 1000) < 120, 'lora_requests_info value is a timestamp');
    assertEq(metric(f, 'vllm:num_requests_running', { model_name: 'tiny' }), 0, 'idle');
  }],
], async () => { await srv.stop(); m.cleanup(); });
