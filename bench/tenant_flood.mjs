// Tenant isolation under a flood: tenant A sends FLOOD concurrent streaming requests, then (once they are all
// queued) tenant B sends B_REQS requests, one every B_GAP ms (each while A's backlog still waits); prints each tenant's median time to first token and
// B's median as a fraction of A's (issue 12 asks for <= 0.3). Talks to a running server (loopback only).
//
//   node bench/tenant_flood.mjs --url http://127.0.0.1:8000 --a medical-qa --b legal-summary \
//       [--flood 64] [--b-reqs 8] [--b-gap-ms 250] [--max-tokens 64] [--prompt-words 32]
//
// Uses only node's fetch (no npm packages), so it runs anywhere node 18+ does.
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const url = args.url ?? 'http://127.0.0.1:8000';
if (!/^http:\/\/(127\.|localhost|\[::1\])/.test(url)) {
  console.error('loopback URLs only');
  process.exit(2);
}
const A = args.a ?? 'medical-qa';
const B = args.b ?? 'legal-summary';
const FLOOD = Number(args.flood ?? 64);
const B_REQS = Number(args['b-reqs'] ?? 8);
const MAX_TOKENS = Number(args['max-tokens'] ?? 64);
const B_GAP = Number(args['b-gap-ms'] ?? 250);
const PROMPT = Array.from({ length: Number(args['prompt-words'] ?? 32) }, (_, i) => `word${i}`).join(' ');

// One streaming completion; resolves with its time to first token (ms) and status.
async function ttft(model) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, prompt: PROMPT, max_tokens: MAX_TOKENS, ignore_eos: true, temperature: 0, stream: true }),
  });
  if (res.status !== 200) return { status: res.status, ms: NaN };
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let first = NaN;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    if (Number.isNaN(first) && /"text":"[^"]/.test(buf)) first = performance.now() - t0;
  }
  return { status: 200, ms: first };
}

const median = (xs) => {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};

const flood = Array.from({ length: FLOOD }, () => ttft(A));
await new Promise((r) => setTimeout(r, 300));  // A's requests are queued
// B's requests arrive while A's backlog is still queued: one every B_GAP ms, without waiting for each other.
const bPending = [];
for (let i = 0; i < B_REQS; ++i) {
  bPending.push(ttft(B));
  await new Promise((r) => setTimeout(r, B_GAP));
}
const bTimes = await Promise.all(bPending);
const aTimes = await Promise.all(flood);
const aMed = median(aTimes.map((r) => r.ms));
const bMed = median(bTimes.map((r) => r.ms));
console.error("A:", aTimes.map((r) => Math.round(r.ms)).join(" "));
console.error("B:", bTimes.map((r) => Math.round(r.ms)).join(" "));
const bad = [...aTimes, ...bTimes].filter((r) => r.status !== 200).length;
console.log(JSON.stringify({ flood: FLOOD, b_requests: B_REQS, max_tokens: MAX_TOKENS, a_median_ttft_ms: Math.round(aMed),
  b_median_ttft_ms: Math.round(bMed), b_over_a: Number((bMed / aMed).toFixed(3)), non_200: bad }));
