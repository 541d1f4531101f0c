// End to end: vLLM's request fields (issue 15, item 1) with the official `openai` client against a real
// `loraplex serve` on the tiny demo model: logit_bias forcing a token, min_tokens holding back a forced EOS,
// bad_words never generated, echo, prompt_logprobs, a list of prompts (indices prompt * n + j), stop_reason,
// truncate_prompt_tokens, continue_final_message, a per-request chat_template (refused without
// --trust-request-chat-template, used with it), VLLM_API_KEY, --chat-template and --no-enable-prefix-caching.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeModel, startServer, assert, assertEq, expectError, run, scrape, metric, waitFor } from './lib.mjs';

const m = makeModel(0);
const config = JSON.parse(readFileSync(path.join(m.model, 'config.json'), 'utf8'));
const EOS = [].concat(config.eos_token_id)[0];
// The server's chat template comes from a file (--chat-template FILE).
const templateFile = path.join(m.dir, 'template.jinja');
writeFileSync(templateFile, '{% for m in messages %}<{{ m.role }}|{{ m.content }}>{% endfor %}' +
  '{% if add_generation_prompt %}<assistant|{% endif %}');
const srv = await startServer(m.model, ['--served-model-name', 'tiny', '--trust-request-chat-template',
  '--max-model-len', '256', '--chat-template', templateFile]);
const client = srv.client();
let keyed = null;

// Raw POST (fields the openai client does not type, and bodies whose error param we read).
const post = async (url, p, body, headers = {}) => {
  const r = await fetch(`${url}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body) });
  return { status: r.status, json: await r.json() };
};

// A token id that prints as one visible token: the model's most likely first token after a fixed prompt.
async function someToken() {
  const r = await post(srv.url, '/v1/completions', { model: 'tiny', prompt: 'Hello', max_tokens: 1, temperature: 0,
    ignore_eos: true, prompt_logprobs: 0 });
  // prompt_logprobs keys are token ids: the last prompt token's id is a real, printable token.
  const last = r.json.choices[0].prompt_logprobs.at(-1);
  return Number(Object.keys(last)[0]);
}

await run([
  ['logit_bias +100 forces one token; it is the stop_reason when listed in stop_token_ids', async () => {
    const id = await someToken();
    const r = await client.completions.create({ model: 'tiny', prompt: 'Once', max_tokens: 6, ignore_eos: true,
      temperature: 1, seed: 3, logit_bias: { [id]: 100 }, logprobs: 0 });
    const toks = r.choices[0].logprobs.tokens;
    assertEq(toks.length, 6, 'six tokens');
    assert(toks.every((t) => t === toks[0]), `every token is the forced one: ${JSON.stringify(toks)}`);
    const s = await post(srv.url, '/v1/completions', { model: 'tiny', prompt: 'Once', max_tokens: 6, ignore_eos: true,
      logit_bias: { [id]: 100 }, stop_token_ids: [id] });
    assertEq(s.json.choices[0].finish_reason, 'stop', 'stopped by the token');
    assertEq(s.json.choices[0].stop_reason, id, 'stop_reason is the token id');
  }],
  ['min_tokens holds back a forced EOS for exactly min_tokens tokens', async () => {
    const base = { model: 'tiny', prompt: 'Tell me', max_tokens: 20, temperature: 1, seed: 1, logit_bias: { [EOS]: 100 } };
    const free = await client.completions.create(base);
    assertEq(free.usage.completion_tokens, 1, 'without min_tokens the forced EOS ends it at once');
    assertEq(free.choices[0].stop_reason, null, 'EOS: stop_reason null');
    // EOS is masked until 5 tokens are out; the forced EOS is then the 6th, counted in usage as vLLM counts it.
    const held = await client.completions.create({ ...base, min_tokens: 5, logprobs: 0 });
    assertEq(held.usage.completion_tokens, 6, 'min_tokens 5: 5 tokens, then the EOS');
    assertEq(held.choices[0].finish_reason, 'stop', 'then EOS');
    assertEq(held.choices[0].stop_reason, null, 'EOS: stop_reason null');
    const eosText = held.choices[0].logprobs.tokens.at(-1);
    assertEq(held.choices[0].logprobs.tokens.slice(0, 5).filter((t) => t === eosText).length, 0, 'no EOS before 5');
    const err = await post(srv.url, '/v1/completions', { ...base, max_tokens: 3, min_tokens: 4 });
    assertEq([err.status, err.json.error.param], [400, 'min_tokens'], 'min_tokens > max_tokens');
  }],
  ['bad_words are never generated (many seeds)', async () => {
    // The most frequent generated token without bad_words becomes the bad word.
    const counts = new Map();
    const params = (seed) => ({ model: 'tiny', prompt: 'The', max_tokens: 12, temperature: 1, seed, ignore_eos: true,
      logprobs: 0 });
    for (let seed = 0; seed < 8; seed++) {
      const r = await client.completions.create(params(seed));
      for (const t of r.choices[0].logprobs.tokens) counts.set(t, (counts.get(t) || 0) + 1);
    }
    const [word] = [...counts.entries()].filter(([t]) => /^[A-Za-z0-9]+$/.test(t))
      .sort((a, b) => b[1] - a[1])[0] || [];
    assert(word, `a plain token to ban among ${JSON.stringify([...counts.keys()])}`);
    for (let seed = 0; seed < 8; seed++) {
      const r = await client.completions.create({ ...params(seed), bad_words: [word] });
      assert(!r.choices[0].logprobs.tokens.includes(word), `seed ${seed}: '${word}' generated despite bad_words`);
    }
  }],
  ['echo returns the prompt before the completion; max_tokens 0 the prompt alone', async () => {
    const plain = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 4, temperature: 0, ignore_eos: true });
    const e = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 4, temperature: 0,
      ignore_eos: true, echo: true });
    assertEq(e.choices[0].text, 'Hello world' + plain.choices[0].text, 'echo + completion');
    const only = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 0, echo: true });
    assertEq(only.choices[0].text, 'Hello world', 'echo only');
    const lp = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 2, temperature: 0,
      ignore_eos: true, echo: true, logprobs: 1 });
    const l = lp.choices[0].logprobs;
    assertEq(l.tokens.length, lp.usage.prompt_tokens + 2, 'prompt + generated tokens');
    assertEq(l.token_logprobs[0], null, 'the first prompt token has no logprob');
    assert(l.token_logprobs.slice(1).every((x) => typeof x === 'number' && x <= 0), 'the others are logprobs');
  }],
  ['prompt_logprobs: one entry per prompt token, vLLM shape', async () => {
    const r = await post(srv.url, '/v1/completions', { model: 'tiny', prompt: 'Hello world again', max_tokens: 1,
      prompt_logprobs: 2 });
    const pl = r.json.choices[0].prompt_logprobs;
    assertEq(pl.length, r.json.usage.prompt_tokens, 'one per prompt token');
    assertEq(pl[0], null, 'first null');
    for (const entry of pl.slice(1)) {
      const vals = Object.values(entry);
      assert(vals.length >= 2 && vals.length <= 3, `prompt token + top 2: ${JSON.stringify(entry)}`);
      for (const v of vals) assert(v.logprob <= 0 && typeof v.decoded_token === 'string', JSON.stringify(v));
      assert(vals.some((v) => v.rank === 1), 'the best alternative has rank 1');
    }
    const c = await post(srv.url, '/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 1, prompt_logprobs: 0 });
    assertEq(c.json.prompt_logprobs.length, c.json.usage.prompt_tokens, 'chat: top-level, one per prompt token');
  }],
  ['a list of prompts: n per prompt, indices prompt * n + j, usage per prompt', async () => {
    const prompts = ['Hello', 'The quick brown'];
    const r = await client.completions.create({ model: 'tiny', prompt: prompts, n: 2, max_tokens: 3, temperature: 0, ignore_eos: true });
    assertEq(r.choices.map((c) => c.index), [0, 1, 2, 3], 'indices');
    for (let i = 0; i < 4; i++) {
      const one = await client.completions.create({ model: 'tiny', prompt: prompts[Math.floor(i / 2)], max_tokens: 3,
        temperature: 0, ignore_eos: true });
      assertEq(r.choices[i].text, one.choices[0].text, `choice ${i} is prompt ${Math.floor(i / 2)}'s`);
    }
    const singles = await Promise.all(prompts.map((p) => client.completions.create({ model: 'tiny', prompt: p, max_tokens: 1 })));
    assertEq(r.usage.prompt_tokens, singles[0].usage.prompt_tokens + singles[1].usage.prompt_tokens, 'prompt tokens once per prompt');
    const s = await client.completions.create({ model: 'tiny', prompt: prompts, n: 2, max_tokens: 2, stream: true });
    const seen = new Set();
    for await (const c of s) for (const ch of c.choices) seen.add(ch.index);
    assertEq([...seen].sort(), [0, 1, 2, 3], 'stream indices');
  }],
  ['stop_reason: the stop string', async () => {
    const g = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 12, temperature: 0, ignore_eos: true });
    const text = g.choices[0].text;
    const stop = text.slice(4, 7);
    assert(stop.length === 3, `generated text long enough: ${JSON.stringify(text)}`);
    const r = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 12, temperature: 0,
      ignore_eos: true, stop: [stop] });
    assertEq(r.choices[0].finish_reason, 'stop', 'finish');
    assertEq(r.choices[0].stop_reason, stop, 'stop_reason');
    const s = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 12, temperature: 0,
      ignore_eos: true, stop: [stop], stream: true });
    let last = null;
    for await (const c of s) if (c.choices.length) last = c.choices[0];
    assertEq(last.stop_reason, stop, 'streamed on the final chunk');
  }],
  ['cache_salt: cached prefix blocks are shared only under the same salt', async () => {
    // A prompt of several full blocks (16 tokens each), new to this server.
    const prompt = Array.from({ length: 80 }, (_, i) => 100 + ((i * 7) % 200));
    const counters = async () => {
      const f = await scrape(srv.url);
      return { hits: metric(f, 'vllm:prefix_cache_hits_total', { model_name: 'tiny' }),
        queries: metric(f, 'vllm:prefix_cache_queries_total', { model_name: 'tiny' }) };
    };
    // One request, then the counters once the engine has published its lookup (stats follow the step).
    const ask = async (salt) => {
      const before = await counters();
      const r = await post(srv.url, '/v1/completions', { model: 'tiny', prompt, max_tokens: 1, temperature: 0,
        ...(salt ? { cache_salt: salt } : {}) });
      assertEq(r.status, 200, `salt ${salt}`);
      let after;
      await waitFor(async () => (after = await counters()).queries >= before.queries + prompt.length, 'stats');
      return after.hits - before.hits;
    };
    await ask('tenant-a');
    assertEq(await ask('tenant-b'), 0, 'another salt finds nothing');
    assertEq(await ask(null), 0, 'no salt finds nothing');
    assert(await ask('tenant-a') >= 64, 'the same salt hits its own blocks');
    const bad = await post(srv.url, '/v1/completions', { model: 'tiny', prompt: 'x', cache_salt: '' });
    assertEq([bad.status, bad.json.error.param], [400, 'cache_salt'], 'empty salt');
  }],
  ['truncate_prompt_tokens keeps the last k tokens', async () => {
    const r = await client.completions.create({ model: 'tiny', prompt: 'one two three four five six seven', max_tokens: 1,
      truncate_prompt_tokens: 3 });
    assertEq(r.usage.prompt_tokens, 3, 'three prompt tokens');
    const e = await post(srv.url, '/v1/completions', { model: 'tiny', prompt: 'x', truncate_prompt_tokens: 257 });
    assertEq([e.status, e.json.error.param], [400, 'truncate_prompt_tokens'], '> max_model_len');
  }],
  ['--chat-template FILE renders chat prompts', async () => {
    const chat = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 4, temperature: 0, ignore_eos: true });
    const raw = await client.completions.create({ model: 'tiny', prompt: '<user|hi><assistant|', add_special_tokens: false,
      max_tokens: 4, temperature: 0, ignore_eos: true });
    assertEq(chat.usage.prompt_tokens, raw.usage.prompt_tokens, 'the file template rendered the prompt');
    assertEq(chat.choices[0].message.content, raw.choices[0].text, 'same prompt, same greedy text');
  }],
  ['per-request chat_template (trusted) and continue_final_message', async () => {
    const tmpl = '{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}';
    const messages = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'Once upon a' }];
    const c = await post(srv.url, '/v1/chat/completions', { model: 'tiny', messages, chat_template: tmpl,
      continue_final_message: true, add_generation_prompt: false, max_tokens: 5, temperature: 0, ignore_eos: true });
    assertEq(c.status, 200, JSON.stringify(c.json));
    const same = await client.completions.create({ model: 'tiny', prompt: '<user>hi\n<assistant>Once upon a',
      add_special_tokens: false, max_tokens: 5, temperature: 0, ignore_eos: true });
    assertEq(c.json.usage.prompt_tokens, same.usage.prompt_tokens, 'the prompt ends inside the last message');
    assertEq(c.json.choices[0].message.content, same.choices[0].text, 'the model continues it');
    const bad = await post(srv.url, '/v1/chat/completions', { model: 'tiny', messages, continue_final_message: true,
      add_generation_prompt: true });
    assertEq([bad.status, bad.json.error.param], [400, 'continue_final_message'], 'with add_generation_prompt');
  }],
  ['VLLM_API_KEY guards /v1; an untrusted server refuses a request chat_template', async () => {
    // Also: --chat-template as text, and --no-enable-prefix-caching (shown in vllm:cache_config_info).
    keyed = await startServer(m.model, ['--served-model-name', 'tiny', '--no-enable-prefix-caching', '--chat-template',
      '{% for m in messages %}[{{ m.content }}]\\n{% endfor %}'], { env: { VLLM_API_KEY: 'sesame', LORAPLEX_API_KEY: '' } });
    await expectError(() => keyed.client().models.list(), 401, 'AuthenticationError', 'no key');
    const ok = keyed.client({ apiKey: 'sesame' });
    assertEq((await ok.models.list()).data[0].id, 'tiny', 'with the key');
    const r = await post(keyed.url, '/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: 'hi' }],
      chat_template: '{{ messages[0].content }}' }, { Authorization: 'Bearer sesame' });
    assertEq([r.status, r.json.error.param], [400, 'chat_template'], 'untrusted template');
    const beam = await post(keyed.url, '/v1/completions', { model: 'tiny', prompt: 'x', use_beam_search: true },
      { Authorization: 'Bearer sesame' });
    assertEq([beam.status, beam.json.error.param], [400, 'use_beam_search'], 'refused field');
    const chat = await ok.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 4, temperature: 0, ignore_eos: true });
    // The text's \\n escape is a newline, as vLLM decodes --chat-template text.
    const raw = await ok.completions.create({ model: 'tiny', prompt: '[hi]\n', add_special_tokens: false, max_tokens: 4,
      temperature: 0, ignore_eos: true });
    assertEq(chat.usage.prompt_tokens, raw.usage.prompt_tokens, '--chat-template renders [hi] and a newline');
    assertEq(chat.choices[0].message.content, raw.choices[0].text, 'same prompt, same greedy text');
    const metrics = await (await fetch(`${keyed.url}/metrics`)).text();
    assert(/vllm:cache_config_info\{[^}]*enable_prefix_caching="False"/.test(metrics), 'prefix caching off');
    const on = await (await fetch(`${srv.url}/metrics`)).text();
    assert(/vllm:cache_config_info\{[^}]*enable_prefix_caching="True"/.test(on), 'prefix caching on by default');
  }],
], async () => {
  if (keyed) await keyed.stop();
  await srv.stop();
  m.cleanup();
});
