// End to end: structured outputs and forced tool calls on a random-weight model, with the official `openai`
// client. A random model writes anything the grammar lets it, so every output that finishes must still parse
// and validate, checked here by ajv (an independent JSON Schema validator) and by JavaScript's own RegExp:
// response_format json_schema / json_object, vLLM's structured_outputs (json, regex, choice) and the older
// guided_* names, with temperature 1 over many seeds, with and without an adapter, alone and in one batch with
// free requests, streaming and not; tool_choice "required" and a named function (arguments parse and match
// the function's parameters); and the 400s for what a grammar can't express.
import { createRequire } from 'node:module';
import path from 'node:path';
import { makeModel, startServer, assert, assertEq, expectError, run } from './lib.mjs';

const require = createRequire(path.join(process.env.LP_NPM_DIR, 'package.json'));
const Ajv = require('ajv');
const ajv = new Ajv({ strict: false });

const m = makeModel(2);
const srv = await startServer(m.model, ['--served-model-name', 'tiny',
  '--lora-modules', `medical-qa=${m.adapterDir('medical-qa')}`, `legal-summary=${m.adapterDir('legal-summary')}`,
  '--max-loras', '2', '--max-lora-rank', '8', '--max-num-seqs', '16']);
const client = srv.client();

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer' },
    kind: { enum: ['cat', 'dog', 'bird'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 },
    home: { type: 'object', properties: { ok: { type: 'boolean' }, code: { type: 'string', pattern: '[A-Z]{2}[0-9]{3}' } },
      required: ['ok', 'code'], additionalProperties: false },
    note: { type: ['string', 'null'], maxLength: 8 },
  },
  required: ['name', 'age', 'kind', 'tags', 'home'],
  additionalProperties: false,
};
const validPerson = ajv.compile(PERSON);
const messages = [{ role: 'user', content: 'Describe a pet as JSON.' }];
const SEEDS = Array.from({ length: 10 }, (_, i) => 1000 + i);

function checkJson(text, validate, what) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`${what}: not JSON: ${JSON.stringify(text)}`);
  }
  if (validate && !validate(doc)) throw new Error(`${what}: invalid ${JSON.stringify(validate.errors)}: ${text}`);
  return doc;
}

const schemaFormat = { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } };

async function personChat(model, seed, extra = {}) {
  const r = await client.chat.completions.create({ model, messages, temperature: 1, seed, max_tokens: 600,
    response_format: schemaFormat, ...extra });
  assertEq(r.choices[0].finish_reason, 'stop', `${model} seed ${seed} finishes`);
  return checkJson(r.choices[0].message.content, validPerson, `${model} seed ${seed}`);
}

await run([
  ['response_format json_schema: every seed parses and validates, base and adapter', async () => {
    for (const model of ['tiny', 'medical-qa'])
      for (const seed of SEEDS) await personChat(model, seed);
  }],
  ['the openai client parses it (chat.completions.parse)', async () => {
    const r = await client.chat.completions.parse({ model: 'legal-summary', messages, temperature: 1, seed: 7,
      max_tokens: 600, response_format: schemaFormat });
    const parsed = r.choices[0].message.parsed;
    assert(parsed && validPerson(parsed), `parsed ${JSON.stringify(parsed)}`);
  }],
  ['constrained and free requests share a batch; constrained outputs equal their solo runs', async () => {
    const solo = await client.chat.completions.create({ model: 'medical-qa', messages, temperature: 1, seed: 42,
      max_tokens: 600, response_format: schemaFormat });
    const jobs = [];
    for (let i = 0; i < 12; ++i) {
      const model = ['tiny', 'medical-qa', 'legal-summary'][i % 3];
      if (i % 4 === 0) {
        jobs.push(client.chat.completions.create({ model, messages, temperature: 1, seed: i, max_tokens: 64 })
          .then((r) => ({ free: true, r })));
      } else if (i % 4 === 2) {  // regex and choice in the same batch
        jobs.push(client.chat.completions.create({ model, messages, temperature: 1, seed: i, max_tokens: 32,
          structured_outputs: { regex: '[a-z]{2,5}-[0-9]{3}' } }).then((r) => {
          assert(/^[a-z]{2,5}-[0-9]{3}$/.test(r.choices[0].message.content), `batched regex ${r.choices[0].message.content}`);
          return { free: true, r };
        }));
        jobs.push(client.completions.create({ model, prompt: 'Pick:', temperature: 1, seed: i, max_tokens: 16,
          structured_outputs: { choice: ['red', 'green', 'blue'] } }).then((r) => {
          assert(['red', 'green', 'blue'].includes(r.choices[0].text), `batched choice ${r.choices[0].text}`);
          return { free: true, r };
        }));
      } else {
        jobs.push(client.chat.completions.create({ model, messages, temperature: 1, seed: i, max_tokens: 600,
          response_format: schemaFormat }).then((r) => ({ free: false, r, model, seed: i })));
      }
    }
    jobs.push(client.chat.completions.create({ model: 'medical-qa', messages, temperature: 1, seed: 42,
      max_tokens: 600, response_format: schemaFormat }).then((r) => ({ again: true, r })));
    // A forced tool call in the same batch (on an adapter): its arguments match the function's parameters.
    const weather = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object',
      properties: { city: { type: 'string', maxLength: 10 } }, required: ['city'] } } };
    const validWeather = ajv.compile(weather.function.parameters);
    for (const seed of [5, 6])
      jobs.push(client.chat.completions.create({ model: 'legal-summary', messages, temperature: 1, seed,
        max_tokens: 200, tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } } })
        .then((r) => {
          const calls = r.choices[0].message.tool_calls;
          assert(calls?.length === 1 && calls[0].function.name === 'get_weather', `batched tool call ${JSON.stringify(calls)}`);
          checkJson(calls[0].function.arguments, validWeather, `batched tool call seed ${seed}`);
          return { free: true, r };
        }));
    for (const j of await Promise.all(jobs)) {
      if (j.again) assertEq(j.r.choices[0].message.content, solo.choices[0].message.content, 'batched == solo');
      else if (!j.free) checkJson(j.r.choices[0].message.content, validPerson, `batched ${j.model} ${j.seed}`);
    }
  }],
  ['streaming: the deltas join into a valid document', async () => {
    for (const seed of SEEDS.slice(0, 4)) {
      const stream = await client.chat.completions.create({ model: 'medical-qa', messages, temperature: 1, seed,
        max_tokens: 600, response_format: schemaFormat, stream: true });
      let text = '';
      let finish = null;
      for await (const c of stream) {
        if (c.choices[0]?.delta?.content) text += c.choices[0].delta.content;
        if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
      }
      assertEq(finish, 'stop', 'stream finish');
      checkJson(text, validPerson, `stream seed ${seed}`);
    }
  }],
  ['response_format json_object: finished outputs are JSON objects', async () => {
    let finished = 0;
    for (const seed of SEEDS.slice(0, 6)) {
      const r = await client.chat.completions.create({ model: 'tiny', messages, temperature: 1, seed,
        max_tokens: 400, response_format: { type: 'json_object' } });
      const c = r.choices[0];
      if (c.finish_reason !== 'stop') continue;  // a random model may write a long document
      finished++;
      const doc = checkJson(c.message.content, null, `json_object seed ${seed}`);
      assert(doc !== null && typeof doc === 'object' && !Array.isArray(doc), `an object: ${c.message.content}`);
    }
    assert(finished > 0, 'at least one json_object output finished');
  }],
  ['structured_outputs regex / choice / json, and the guided_* names, on both endpoints', async () => {
    const pattern = '[a-z]{3}-[0-9]{2,4}( [A-Z][a-z]*)?';
    const re = new RegExp(`^(?:${pattern})$`);
    for (const seed of SEEDS) {
      const a = await client.chat.completions.create({ model: 'tiny', messages, temperature: 1, seed, max_tokens: 64,
        structured_outputs: { regex: pattern } });
      assert(re.test(a.choices[0].message.content), `regex: ${JSON.stringify(a.choices[0].message.content)}`);
      const b = await client.completions.create({ model: 'medical-qa', prompt: 'Answer:', temperature: 1, seed,
        max_tokens: 16, guided_regex: pattern });
      assert(re.test(b.choices[0].text), `guided_regex: ${JSON.stringify(b.choices[0].text)}`);
      const choices = ['yes', 'no', 'maybe later'];
      const c = await client.chat.completions.create({ model: 'legal-summary', messages, temperature: 1, seed,
        max_tokens: 16, structured_outputs: { choice: choices } });
      assert(choices.includes(c.choices[0].message.content), `choice: ${c.choices[0].message.content}`);
      const d = await client.completions.create({ model: 'tiny', prompt: 'Pick:', temperature: 1, seed,
        max_tokens: 16, guided_choice: choices });
      assert(choices.includes(d.choices[0].text), `guided_choice: ${d.choices[0].text}`);
      const e = await client.completions.create({ model: 'tiny', prompt: 'JSON:', temperature: 1, seed,
        max_tokens: 600, structured_outputs: { json: PERSON } });
      checkJson(e.choices[0].text, validPerson, `structured_outputs.json seed ${seed}`);
    }
  }],
  ['tool_choice named: arguments parse and match the parameters, stream and not', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
      parameters: { type: 'object', properties: { unit: { enum: ['c', 'f'] },
        city: { type: 'string', maxLength: 10 } }, required: ['unit', 'city'] } } },
    { type: 'function', function: { name: 'book', parameters: { type: 'object',
      properties: { nights: { type: 'integer' } }, required: ['nights'] } } }];
    const validArgs = ajv.compile(tools[0].function.parameters);
    const toolChoice = { type: 'function', function: { name: 'get_weather' } };
    for (const seed of SEEDS.slice(0, 6)) {
      const r = await client.chat.completions.create({ model: 'medical-qa', messages, temperature: 1, seed,
        max_tokens: 300, tools, tool_choice: toolChoice });
      const calls = r.choices[0].message.tool_calls;
      assertEq(calls.length, 1, 'one call');
      assertEq(calls[0].type, 'function', 'type');
      assertEq(calls[0].function.name, 'get_weather', 'name');
      assert(typeof calls[0].id === 'string' && calls[0].id.length > 0, 'id');
      const args = checkJson(calls[0].function.arguments, validArgs, `named seed ${seed}`);
      assertEq(Object.keys(args), ['unit', 'city'], 'arguments in the order the schema lists them');
      const stream = await client.chat.completions.create({ model: 'tiny', messages, temperature: 1, seed,
        max_tokens: 300, tools, tool_choice: toolChoice, stream: true });
      const acc = {};
      for await (const c of stream)
        for (const tc of c.choices[0]?.delta?.tool_calls ?? []) {
          acc[tc.index] ??= { name: '', args: '' };
          if (tc.function?.name) acc[tc.index].name += tc.function.name;
          if (tc.function?.arguments) acc[tc.index].args += tc.function.arguments;
        }
      assertEq(Object.keys(acc).length, 1, 'one streamed call');
      assertEq(acc[0].name, 'get_weather', 'streamed name');
      checkJson(acc[0].args, validArgs, `named stream seed ${seed}`);
    }
  }],
  ['tool_choice required: at least one call, each naming a tool with valid arguments', async () => {
    const tools = [{ type: 'function', function: { name: 'add', parameters: { type: 'object',
      properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } } },
    { type: 'function', function: { name: 'greet', parameters: { type: 'object',
      properties: { who: { type: 'string', maxLength: 8 } }, required: ['who'] } } }];
    const byName = Object.fromEntries(tools.map((t) => [t.function.name, ajv.compile(t.function.parameters)]));
    for (const seed of SEEDS.slice(0, 6)) {
      const r = await client.chat.completions.create({ model: 'legal-summary', messages, temperature: 1, seed,
        max_tokens: 400, tools, tool_choice: 'required' });
      assertEq(r.choices[0].finish_reason, 'tool_calls', 'finish_reason');
      const calls = r.choices[0].message.tool_calls;
      assert(calls.length >= 1, 'at least one call');
      for (const c of calls) {
        assert(c.function.name in byName, `known tool ${c.function.name}`);
        checkJson(c.function.arguments, byName[c.function.name], `required seed ${seed}`);
      }
    }
  }],
  ['what a grammar cannot express is a 400 naming it', async () => {
    const bad = { type: 'object', properties: { n: { type: 'integer', minimum: 3 } } };
    const e1 = await expectError(() => client.chat.completions.create({ model: 'tiny', messages, max_tokens: 8,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: bad } } }), 400,
    'BadRequestError', 'minimum');
    assert(/minimum/.test(e1.message), e1.message);
    const e2 = await expectError(() => client.chat.completions.create({ model: 'tiny', messages, max_tokens: 8,
      structured_outputs: { regex: '(a)\\1' } }), 400, 'BadRequestError', 'backreference');
    assert(/backreference|\\1/i.test(e2.message), e2.message);
  }],
], async () => {
  await srv.stop();
  m.cleanup();
});
