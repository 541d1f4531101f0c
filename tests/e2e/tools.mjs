// End to end: tool calling with the official `openai` client against `loraplex serve --enable-auto-tool-choice
// --tool-call-parser hermes` (tiny demo model). A random-weight model never writes a tool call by itself, so
// the parsers are proven in tests/server/tool_parser_test.cpp; here: the 400s (bad tools, a tool_choice naming
// no tool, "auto" on a server without the flags), the bad flags refused at start-up, "none" and "auto" replies
// keeping the text as content (streamed the same), and a named function's reply shape (the output is the
// arguments; streamed as tool-call deltas that add up to the non-streaming arguments).
import { spawnSync } from 'node:child_process';
import { makeModel, startServer, assert, assertEq, expectError, run, BIN } from './lib.mjs';

const m = makeModel(0);
const srv = await startServer(m.model, ['--served-model-name', 'tiny', '--enable-auto-tool-choice',
  '--tool-call-parser', 'hermes', '--max-model-len', '512']);
const plain = await startServer(m.model, ['--served-model-name', 'tiny', '--max-model-len', '512']);
const client = srv.client();

const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
  { type: 'function', function: { name: 'now' } },
];
const base = { model: 'tiny', messages: [{ role: 'user', content: 'Weather in Paris?' }], max_tokens: 8, temperature: 0,
  ignore_eos: true, tools };

// Content, tool calls (argument deltas joined) and finish reason of a streamed chat reply.
async function streamed(params) {
  const s = await client.chat.completions.create({ ...params, stream: true });
  let content = '', finish = null;
  const calls = [];
  for await (const c of s) {
    if (!c.choices.length) continue;
    const d = c.choices[0].delta;
    content += d.content ?? '';
    for (const tc of d.tool_calls ?? []) {
      if (tc.id) {
        assertEq(tc.index, calls.length, 'a new call has the next index');
        assertEq(tc.type, 'function', 'call type');
        calls.push({ id: tc.id, name: tc.function.name, arguments: tc.function.arguments ?? '' });
      } else {
        calls[tc.index].arguments += tc.function.arguments ?? '';
      }
    }
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  return { content, calls, finish };
}

const param400 = async (params, param, what, c = client) => {
  const e = await expectError(() => c.chat.completions.create(params), 400, 'BadRequestError', what);
  assertEq(e.param, param, `${what}: param`);
  return e;
};

await run([
  ['bad tools entries are 400s naming the field', async () => {
    await param400({ ...base, tools: [tools[0], { type: 'function', function: { name: 'get weather' } }] },
      'tools[1].function.name', 'a name with a space');
    await param400({ ...base, tools: [{ type: 'function', function: { description: 'no name' } }] },
      'tools[0].function.name', 'no name');
    await param400({ ...base, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'string' } } }] },
      'tools[0].function.parameters', 'parameters of a string');
    await param400({ ...base, tools: [{ type: 'retrieval', function: { name: 'f' } }] }, 'tools[0].type', 'type');
  }],
  ['tool_choice naming an absent function, or without tools, is a 400', async () => {
    await param400({ ...base, tool_choice: { type: 'function', function: { name: 'send_email' } } }, 'tool_choice',
      'absent function');
    const { tools: _, ...noTools } = base;
    await param400({ ...noTools, tool_choice: 'required' }, 'tool_choice', 'required without tools');
  }],
  ['"auto" needs --enable-auto-tool-choice and --tool-call-parser', async () => {
    const e = await param400(base, 'tool_choice', 'auto by default on a plain server', plain.client());
    assert(e.message.includes('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser'), e.message);
    await param400({ ...base, tool_choice: 'auto' }, 'tool_choice', 'explicit auto', plain.client());
    const r = await plain.client().chat.completions.create({ ...base, tool_choice: 'none' });
    assertEq(typeof r.choices[0].message.content, 'string', '"none" works without the flags');
  }],
  ['bad tool flags stop the server before it starts', async () => {
    for (const [args, msg] of [[['--tool-call-parser', 'pythonic'], 'unknown parser'],
      [['--enable-auto-tool-choice'], 'requires --tool-call-parser']]) {
      const r = spawnSync(BIN, ['serve', m.model, '--port', '0', ...args], { encoding: 'utf8', timeout: 30000 });
      assert(r.status !== 0, `${args.join(' ')}: exit status ${r.status}`);
      assert(r.stderr.includes(msg), `${args.join(' ')}: ${r.stderr}`);
    }
  }],
  ['"none" and "auto" keep plain text as content; streaming agrees', async () => {
    // hermes in "auto" keeps special tokens (its markers may be special, as in vLLM): so does "none" here.
    const none = await client.chat.completions.create({ ...base, tool_choice: 'none', skip_special_tokens: false });
    const auto = await client.chat.completions.create(base);  // tools given: "auto" by default
    for (const [r, what] of [[none, 'none'], [auto, 'auto']]) {
      const msg = r.choices[0].message;
      assertEq(typeof msg.content, 'string', `${what}: content`);
      assert(msg.content.length > 0, `${what}: some text`);
      assert(!msg.tool_calls || msg.tool_calls.length === 0, `${what}: no tool calls`);
      assertEq(r.choices[0].finish_reason, 'length', `${what}: finish`);
    }
    // Same prompt (the template sees the tools either way), greedy: the same text.
    assertEq(auto.choices[0].message.content, none.choices[0].message.content, 'auto leaves plain text alone');
    const s = await streamed(base);
    assertEq(s.content, auto.choices[0].message.content, 'streamed content');
    assertEq(s.calls, [], 'no streamed calls');
    assertEq(s.finish, 'length', 'streamed finish');
  }],
  ['a named function: the output is the call\'s arguments, streamed as tool-call deltas', async () => {
    const params = { ...base, tool_choice: { type: 'function', function: { name: 'get_weather' } } };
    const r = await client.chat.completions.create(params);
    const msg = r.choices[0].message;
    assertEq(msg.content, null, 'no content');
    assertEq(msg.tool_calls.length, 1, 'one call');
    const call = msg.tool_calls[0];
    assert(/^chatcmpl-tool-[0-9a-f]{32}$/.test(call.id), `id ${call.id}`);
    assertEq(call.type, 'function', 'type');
    assertEq(call.function.name, 'get_weather', 'name');
    assertEq(typeof call.function.arguments, 'string', 'arguments are a string');
    assert(['stop', 'length'].includes(r.choices[0].finish_reason), `vLLM: a named call finishes as stop/length, got ${r.choices[0].finish_reason}`);
    const s = await streamed(params);
    assertEq(s.content, '', 'no streamed content');
    assertEq(s.calls.map((c) => [c.name, c.arguments]), [['get_weather', call.function.arguments]], 'streamed call');
    assertEq(s.finish, r.choices[0].finish_reason, 'streamed finish');
  }],
], async () => {
  await srv.stop();
  await plain.stop();
  m.cleanup();
});
