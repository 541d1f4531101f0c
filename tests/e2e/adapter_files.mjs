// Adapter files under --lora-root end to end (what api.mjs and lifecycle.mjs do not already cover: they test
// folder traversal, symlinked folders, absolute paths, duplicate names, rank over --max-lora-rank, unknown
// unloads, wrong keys and the endpoints without the flag). Here: a symlinked adapter_model.safetensors or
// adapter_config.json inside the root that leads out is 403 and nothing of the outside file comes back, by the
// load endpoint and by the resolver; a FIFO for the weights is refused within a second; a pickle-only folder is
// refused without the pickle being opened (it is a FIFO too); malformed safetensors, a module the base lacks
// and a wrong shape are 400 without echoing the file; the base keeps serving after every refusal. And the KV
// plan: serve logs it, `plan` prints the same numbers for the same flags, /metrics exports
// vllm:cache_config_info and loraplex_kv_cache_capacity_tokens.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BIN, makeModel, startServer, scrape, metric, assert, assertEq, run, greedy } from './lib.mjs';

const SECRET = 'TOP-SECRET-c0ffee';
const m = makeModel(2);
const root = path.join(m.dir, 'root');
const elsewhere = path.join(m.dir, 'elsewhere');
mkdirSync(root);
mkdirSync(elsewhere);
writeFileSync(path.join(elsewhere, 'secret.json'), `{"r": 8, "note": "${SECRET}"`);  // also not valid JSON
cpSync(m.adapterDir('legal-summary'), path.join(elsewhere, 'valid'), { recursive: true });

// A copy of a demo adapter inside the root, then `edit(dir)` on it.
function adapter(name, edit = () => {}) {
  const dir = path.join(root, name);
  cpSync(m.adapterDir('medical-qa'), dir, { recursive: true });
  edit(dir);
  return dir;
}
// A safetensors file: F32 zeros for each {name: shape}; or raw bytes after a header of `headerText`.
function safetensors(tensors) {
  const header = {};
  let off = 0;
  for (const [name, shape] of Object.entries(tensors)) {
    const n = shape.reduce((a, b) => a * b, 1) * 4;
    header[name] = { dtype: 'F32', shape, data_offsets: [off, off + n] };
    off += n;
  }
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (text.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  return Buffer.concat([len, Buffer.from(text), Buffer.alloc(off)]);
}
const P = 'base_model.model.model.layers.0';
const qOnly = (dir) => {
  const cfgPath = path.join(dir, 'adapter_config.json');
  const cfg = JSON.parse(execFileSync('cat', [cfgPath]).toString());
  cfg.target_modules = ['q_proj'];
  writeFileSync(cfgPath, JSON.stringify(cfg));
};

const links = {
  weights: adapter('link-weights', (d) => {
    rmSync(path.join(d, 'adapter_model.safetensors'));
    symlinkSync(path.join(elsewhere, 'valid', 'adapter_model.safetensors'), path.join(d, 'adapter_model.safetensors'));
  }),
  config: adapter('link-config', (d) => {
    rmSync(path.join(d, 'adapter_config.json'));
    symlinkSync(path.join(elsewhere, 'secret.json'), path.join(d, 'adapter_config.json'));
  }),
  relConfig: adapter('link-config-rel', (d) => {
    rmSync(path.join(d, 'adapter_config.json'));
    symlinkSync('../../elsewhere/secret.json', path.join(d, 'adapter_config.json'));
  }),
};
const fifo = adapter('fifo', (d) => {
  rmSync(path.join(d, 'adapter_model.safetensors'));
  execFileSync('mkfifo', [path.join(d, 'adapter_model.safetensors')]);
});
const pickle = adapter('pickle', (d) => {
  rmSync(path.join(d, 'adapter_model.safetensors'));
  execFileSync('mkfifo', [path.join(d, 'adapter_model.bin')]);  // would block if anything opened it
});
const garbled = adapter('garbled', (d) => {
  const text = `{"x": ${SECRET}}`;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  writeFileSync(path.join(d, 'adapter_model.safetensors'), Buffer.concat([len, Buffer.from(text)]));
});
const truncated = adapter('truncated', (d) => {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(1000n);
  writeFileSync(path.join(d, 'adapter_model.safetensors'), Buffer.concat([len, Buffer.from('{"a":1}')]));
});
const foreignModule = adapter('foreign-module', (d) => writeFileSync(path.join(d, 'adapter_model.safetensors'),
  safetensors({ [`${P}.self_attn.q_proj.lora_A.weight`]: [8, 64], [`${P}.self_attn.q_proj.lora_B.weight`]: [64, 8],
    [`${P}.self_attn.foo_proj.lora_A.weight`]: [8, 64], [`${P}.self_attn.foo_proj.lora_B.weight`]: [64, 8] })));
const wrongShape = adapter('wrong-shape', (d) => {
  qOnly(d);
  writeFileSync(path.join(d, 'adapter_model.safetensors'), safetensors({
    [`${P}.self_attn.q_proj.lora_A.weight`]: [8, 63], [`${P}.self_attn.q_proj.lora_B.weight`]: [64, 8] }));
});
const good = adapter('good', (d) => {
  qOnly(d);
  writeFileSync(path.join(d, 'adapter_model.safetensors'), safetensors({
    [`${P}.self_attn.q_proj.lora_A.weight`]: [8, 64], [`${P}.self_attn.q_proj.lora_B.weight`]: [64, 8] }));
});

const KV_FLAGS = ['--kv-cache-memory', '1MiB'];  // the demo model is BF16: the cache is too (auto)
const srv = await startServer(m.model, ['--allow-runtime-lora-updating', '--lora-root', root, '--enable-lora-resolver',
  '--max-loras', '2', '--max-lora-rank', '16', ...KV_FLAGS]);
const client = srv.client();
const post = (p, body) => fetch(`${srv.url}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify(body) });
const baseline = await greedy(client, 'model', 'The base model', 6);

// Loads `dir` as `name`: [status, body text, milliseconds].
async function load(name, dir) {
  const t0 = Date.now();
  const r = await post('/v1/load_lora_adapter', { lora_name: name, lora_path: dir });
  return [r.status, await r.text(), Date.now() - t0];
}
async function baseStillServes(what) {
  assertEq(await greedy(client, 'model', 'The base model', 6), baseline, `the base serves the same after ${what}`);
  assertEq((await fetch(`${srv.url}/health`)).status, 200, `healthy after ${what}`);
}
const noLeak = (text, what) => {
  assert(!text.includes('TOP-SECRET') && !text.includes('c0ffee'), `${what}: outside content echoed: ${text}`);
  assert(!text.includes('elsewhere'), `${what}: the link's target is named: ${text}`);
};

await run([
  ['a symlinked weights or config file leading out of the root: 403, nothing of it echoed', async () => {
    for (const [what, dir] of Object.entries(links)) {
      const [status, text] = await load(`l-${what}`, dir);
      assertEq(status, 403, `${what}: ${text}`);
      assertEq(JSON.parse(text).error.type, 'PermissionDeniedError', `${what}: error type`);
      assert(/outside the allowed root/.test(text), `${what}: says why: ${text}`);
      noLeak(text, what);
    }
    const list = (await client.models.list()).data.map((x) => x.id);
    assertEq(list, ['model'], 'nothing was registered');
    await baseStillServes('the symlinks');
  }],
  ['the resolver keeps the same confinement', async () => {
    for (const name of ['link-weights', 'link-config']) {
      const r = await post('/v1/completions', { model: name, prompt: 'x', max_tokens: 2 });
      const text = await r.text();
      assertEq(r.status, 403, `${name} by name: ${text}`);
      noLeak(text, name);
    }
    await baseStillServes('the resolver refusals');
  }],
  ['a FIFO for the weights is refused within a second', async () => {
    const [status, text, ms] = await load('fifo', fifo);
    assertEq(status, 400, text);
    assert(/not a regular file \(a FIFO\)/.test(text), `says what is wrong: ${text}`);
    assert(ms < 1000, `answered in ${ms} ms`);
    await baseStillServes('the FIFO');
  }],
  ['a pickle-only folder is refused without opening the pickle', async () => {
    const [status, text, ms] = await load('pickle', pickle);
    assertEq(status, 400, text);
    assert(/adapter_model\.bin but no adapter_model\.safetensors/.test(text), `names the pickle: ${text}`);
    assert(ms < 1000, `answered in ${ms} ms (a FIFO pickle would block if opened)`);
  }],
  ['malformed safetensors, a module the base lacks, a wrong shape: 400, the base still serving', async () => {
    const cases = [
      [garbled, /invalid JSON header/, 'garbled header'],
      [truncated, /runs past the end of the file/, 'header length past the end'],
      [foreignModule, /foo_proj, which the base model does not have/, 'unknown module'],
      [wrongShape, /has shape \[8, 63\], expected \[8, 64\]/, 'wrong shape'],
    ];
    for (const [dir, re, what] of cases) {
      const [status, text] = await load(path.basename(dir), dir);
      assertEq(status, 400, `${what}: ${text}`);
      assertEq(JSON.parse(text).error.type, 'BadRequestError', `${what}: error type`);
      assert(re.test(text), `${what}: message ${text}`);
      noLeak(text, what);
    }
    await baseStillServes('the invalid adapters');
    // A well-formed q_proj-only adapter of the same layout loads: the refusals above are about the files.
    const [status, text] = await load('good', good);
    assertEq(status, 200, text);
    assertEq((await client.completions.create({ model: 'good', prompt: 'x', max_tokens: 2, ignore_eos: true })).usage.completion_tokens, 2,
      'the good adapter serves');
  }],
  ['the KV plan: logged by serve, printed alike by plan, exported on /metrics', async () => {
    // 1 MiB of BF16 KV at 256 bytes a token (2 layers x 2 KV heads x 16 dims x K,V x 2 bytes): 4,096 tokens,
    // 256 blocks of 16.
    const line = (text) => text.split('\n').find((l) => l.includes('KV cache tokens'));
    const served = line(srv.log());
    assert(served && /4096 +in 256 blocks of 16, sized by --kv-cache-memory/.test(served), `serve logs the plan: ${served}`);
    for (const row of ['weights', 'adapter slots', 'host tier']) assert(srv.log().includes(`  ${row} `), `serve logs ${row}`);
    const planned = execFileSync(BIN, ['plan', '--model', m.model, '--max-loras', '2', '--max-lora-rank', '16', ...KV_FLAGS])
      .toString();
    assertEq(line(planned).trim(), served.trim(), 'plan prints the same KV line as serve');
    const slots = (text) => text.split('\n').find((l) => l.includes('  adapter slots'));
    assertEq(slots(planned).trim(), slots(srv.log()).trim(), 'and the same slot bytes');

    const f = await scrape(srv.url);
    assertEq(metric(f, 'vllm:cache_config_info', { block_size: '16', num_gpu_blocks: '256', cache_dtype: 'bf16' }), 1,
      `vllm:cache_config_info ${JSON.stringify(f['vllm:cache_config_info'])}`);
    assertEq(metric(f, 'loraplex_kv_cache_capacity_tokens'), 4096, 'capacity');
    assertEq(metric(f, 'loraplex_kv_cache_blocks_total'), 256, 'blocks agree');
  }],
], async () => { await srv.stop(); m.cleanup(); });
