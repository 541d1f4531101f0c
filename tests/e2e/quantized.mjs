// End to end on a quantized base: `loraplex serve --quantization int8` reports it in /v1/models and in its
// start-up log, serves completions with and without an adapter (the adapter BF16 on top of the int8 base),
// and its logprobs differ from an unquantized server's on the same prompt (so the flag reaches the model).
// An AWQ checkpoint is served as such (the flag may confirm it). A bad --quantization value stops serve
// before it binds, with the flag named.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { makeModel, startServer, assert, assertEq, run, BIN } from './lib.mjs';

const m = makeModel(2);
const lora = ['--lora-modules', `medical-qa=${m.adapterDir('medical-qa')}`, '--max-loras', '1', '--max-lora-rank', '8'];
const q8 = await startServer(m.model, ['--served-model-name', 'tiny', '--quantization', 'int8', ...lora]);
const plain = await startServer(m.model, ['--served-model-name', 'tiny', ...lora]);

// Top logprob of each greedy token.
async function logprobs(srv, model) {
  const r = await srv.client().completions.create({ model, prompt: 'Hello world', max_tokens: 6, temperature: 0,
    logprobs: 1, ignore_eos: true });
  assertEq(r.choices[0].finish_reason, 'length', `${model} finish`);
  assertEq(r.usage.completion_tokens, 6, `${model} completion tokens`);
  return r.choices[0].logprobs.token_logprobs;
}

await run([
  ['/v1/models reports the base quantization, OpenAI fields intact', async () => {
    const list = await q8.client().models.list();
    assertEq(list.data.map((x) => x.id), ['tiny', 'medical-qa'], 'ids');
    assertEq(list.data[0].quantization, 'int8', 'base quantization');
    assertEq(list.data[0].object, 'model', 'object');
    assertEq(list.data[0].owned_by, 'loraplex', 'owned_by');
    assertEq(list.data[0].parent, null, 'base parent');
    assertEq(list.data[1].parent, 'tiny', 'adapter parent');
    const other = await plain.client().models.list();
    assertEq(other.data[0].quantization, null, 'unquantized base: null');
  }],
  ['start-up log names the quantization and the bytes per format', async () => {
    assert(/quantization int8; a decode step reads int8 [0-9.]+ MiB, BF16 [0-9.]+ MiB/.test(q8.log()), q8.log());
    assert(/ready: serving 'tiny' \+ 1 adapters .*quantization int8\)/.test(q8.log()), q8.log());
    assert(/quantization none/.test(plain.log()), plain.log());
  }],
  ['completions with and without an adapter on the int8 base', async () => {
    const base = await logprobs(q8, 'tiny');
    const adapted = await logprobs(q8, 'medical-qa');
    assert(JSON.stringify(base) !== JSON.stringify(adapted), 'the adapter changes the output on the int8 base');
    const plainBase = await logprobs(plain, 'tiny');
    assert(JSON.stringify(base) !== JSON.stringify(plainBase), 'int8 logprobs equal the unquantized ones');
    // ... but only by quantization noise (the first token: later ones may follow different greedy paths).
    assert(Math.abs(base[0] - plainBase[0]) < 0.5, `first logprob ${base[0]} vs ${plainBase[0]}`);
  }],
  ['an AWQ checkpoint is detected: /v1/models says awq, completions work', async () => {
    const awq = path.join(m.dir, 'awq');
    execFileSync(BIN, ['demo-model', awq, '--shape', 'small', '--quantization', 'awq'], { stdio: 'pipe' });
    const srv = await startServer(awq, ['--served-model-name', 'small-awq', '--quantization', 'awq']);
    try {
      const list = await srv.client().models.list();
      assertEq(list.data[0].quantization, 'awq', 'base quantization');
      assert(/quantization awq; a decode step reads int4 [0-9.]+ MiB, F16 [0-9.]+ MiB/.test(srv.log()), srv.log());
      await logprobs(srv, 'small-awq');
    } finally {
      await srv.stop();
    }
  }],
  ['a bad --quantization value is refused before the server starts', async () => {
    let out = '';
    try {
      execFileSync(BIN, ['serve', m.model, '--port', '0', '--quantization', 'int4'], { stdio: 'pipe', timeout: 20000 });
    } catch (e) {
      out = String(e.stderr) + String(e.stdout);
      assertEq(e.status, 1, 'exit status');
    }
    assert(out.includes('--quantization int4: expected none, int8, awq or gptq'), out);
    assert(!out.includes('listening on'), 'refused before binding');
  }],
], async () => {
  await q8.stop();
  await plain.stop();
  m.cleanup();
});
