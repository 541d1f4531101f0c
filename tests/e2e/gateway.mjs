// The Kubernetes deployment (deploy/k8s) and the Gateway API Inference Extension contract, end to end:
//  - every YAML document under deploy/k8s parses; core objects validate against the Kubernetes schemas
//    (npm kubernetes-models), Gateway / HTTPRoute against the Gateway API's (@kubernetes-models/gateway-api),
//    InferencePool / InferenceObjective / InferenceModelRewrite and the picker's EndpointPickerConfig against
//    tests/fixtures/k8s/inference-extension.schema.json (a subset of the published CRDs; see its $comment);
//    the objects reference each other consistently (selectors, ports, names);
//  - the Deployment runs: its image tag is the CMake project version, every --flag exists in
//    `loraplex serve --help`, and a real `loraplex serve` started with the manifest's own args (paths and
//    sizes swapped for a demo model) serves the probe paths as the probes assume: ready = 200, draining =
//    503 on the readiness path while the liveness path stays 200;
//  - the gateway-metrics contract: every metric and label the picker's config reads (epp.yaml), with the
//    semantics of the model-server protocol (gateway-api-inference-extension
//    docs/proposals/003-model-server-protocol): queue and running gauges count the requests this test
//    holds waiting and running, KV usage is a fraction that grows with the tokens held, and
//    vllm:lora_requests_info's newest sample lists the adapters with running / waiting requests, max_lora =
//    the slots, value = a recent unix time.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, makeModel, startServer, scrape, waitFor, assert, assertEq, run } from './lib.mjs';

const NPM = process.env.LP_NPM_DIR;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const K8S = path.join(ROOT, 'deploy', 'k8s');
const require = createRequire(path.join(NPM, 'package.json'));
for (const p of ['yaml', 'ajv', 'kubernetes-models', '@kubernetes-models/gateway-api']) {
  if (!existsSync(path.join(NPM, 'node_modules', p))) {
    console.log(`tests/fixtures/npm/node_modules/${p} is missing (run make fixtures)`);
    process.exit(1);  // the gtest wrapper skips (or, under CI, fails) before this; a stale install fails
  }
}
const YAML = require('yaml');
const Ajv = require('ajv').default;

// ---- the manifests ----
const docs = [];  // { file, obj }
for (const file of readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f)).sort()) {
  const text = readFileSync(path.join(K8S, file), 'utf8');
  if (!text.startsWith('#')) throw new Error(`${file}: no comment header saying what it is for`);
  for (const d of YAML.parseAllDocuments(text, { uniqueKeys: true })) {
    if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    const obj = d.toJS();
    if (obj !== null) docs.push({ file, obj });
  }
}
const find = (kind, name) => {
  const hit = docs.filter((d) => d.obj.kind === kind && (!name || d.obj.metadata?.name === name));
  if (hit.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''} in deploy/k8s, found ${hit.length}`);
  return hit[0].obj;
};
const server = find('Deployment', 'loraplex');
const pod = server.spec.template.spec;
const ctr = pod.containers[0];
const args = ctr.args;
const argValue = (flag) => {
  const i = args.indexOf(flag);
  assert(i >= 0 && i + 1 < args.length, `the Deployment passes ${flag} with a value`);
  return args[i + 1];
};
const namedPort = (c, p) => (typeof p === 'number' ? p : c.ports.find((x) => x.name === p)?.containerPort);
const subset = (a, b) => Object.entries(a).every(([k, v]) => b[k] === v);

const eppDeploy = find('Deployment', 'loraplex-epp');
const eppCtr = eppDeploy.spec.template.spec.containers[0];
const eppArg = (flag) => eppCtr.args[eppCtr.args.indexOf(flag) + 1];
const eppConfigPath = eppArg('--config-file');
const eppConfigMount = eppCtr.volumeMounts.find((m) => eppConfigPath.startsWith(`${m.mountPath}/`));
const eppConfigMap = find('ConfigMap', eppDeploy.spec.template.spec.volumes.find((v) => v.name === eppConfigMount.name).configMap.name);
const eppConfig = YAML.parse(eppConfigMap.data[path.basename(eppConfigPath)], { uniqueKeys: true });

// The metric specs the picker applies to the loraplex pods: the engine named by their engine-type label.
function pickerMetrics() {
  const ext = eppConfig.plugins.find((p) => p.type === 'core-metrics-extractor');
  assert(ext, 'the picker config has a core-metrics-extractor');
  const prm = ext.parameters;
  const engine = server.spec.template.metadata.labels[prm.engineLabelKey] ?? prm.defaultEngine;
  const cfg = prm.engineConfigs.find((e) => e.name === engine);
  assert(cfg, `engineConfigs has the pods' engine '${engine}'`);
  const name = (spec) => {
    assert(/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(spec), `a bare metric name (no label filter) in ${spec}`);
    return spec;
  };
  return { queue: name(cfg.queuedRequestsSpec), running: name(cfg.runningRequestsSpec), kv: name(cfg.kvUsageSpec),
    lora: name(cfg.loraSpec), cacheInfo: name(cfg.cacheInfoSpec),
    blockSizeLabel: cfg.cacheBlockSizeLabelName || 'block_size', numBlocksLabel: cfg.cacheNumBlocksLabelName || 'num_gpu_blocks' };
}

// ---- the running server: the Deployment's own args, with paths and sizes made to fit this test ----
const keyRef = ctr.env?.find((e) => e.name === 'LORAPLEX_API_KEY')?.valueFrom?.secretKeyRef ?? {};
const KEY = docs.find((d) => d.obj.kind === 'Secret' && d.obj.metadata.name === keyRef.name)?.obj.stringData?.[keyRef.key];
const m = makeModel(4, 'smol');  // smol: a streamed request runs for seconds, long enough to scrape
const adapterRoot = path.join(m.model, 'adapters');
// Small enough that two running requests fill a good part of it (so a percent would not pass for a
// fraction), large enough that they never fill it during the test (no preemption: ~40 tokens/s each).
const KV_TOKENS = 1024;
// The test's sizes: two adapter slots and two running requests, so that it can hold requests waiting.
const overrides = { '--max-loras': '2', '--max-num-seqs': '2' };
function serveArgs() {
  const out = [];
  for (let i = 2; i < args.length; i++) {  // args[0] = serve, args[1] = the model folder
    const a = args[i];
    if (['--host', '--port', '--threads'].includes(a)) { i++; continue; }  // startServer sets them
    out.push(a);
    if (a in overrides) { out.push(overrides[a]); i++; } else if (a === '--lora-root') { out.push(adapterRoot); i++; }
  }
  return [...out, '--kv-cache-tokens', String(KV_TOKENS)];
}
let srv = null;

const auth = { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' };
// A long streamed completion; `chunks` counts its SSE data events (each carries >= 1 generated token).
const promptOf = (model) => Array.from({ length: 10 }, (_, i) => `${model} line ${i}`).join('\n');
async function promptTokens(model) {
  const r = await fetch(`${srv.url}/tokenize`, { method: 'POST', headers: auth, body: JSON.stringify({ model, prompt: promptOf(model) }) });
  return (await r.json()).count;
}
function stream(model) {
  const ctl = new AbortController();
  const s = { model, chunks: 0, ended: false, abort: () => ctl.abort() };
  s.done = (async () => {
    const r = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: auth, signal: ctl.signal,
      body: JSON.stringify({ model, prompt: promptOf(model), max_tokens: 600, ignore_eos: true, temperature: 0, stream: true }) });
    s.status = r.status;
    if (r.status !== 200) {
      s.error = new Error(`HTTP ${r.status}: ${await r.text()}`);
      return;
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let k;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        if (buf.slice(0, k).startsWith('data: {')) s.chunks++;
        buf = buf.slice(k + 2);
      }
    }
  })().catch((e) => { if (e.name !== 'AbortError') s.error = e; }).finally(() => { s.ended = true; });
  return s;
}
const streaming = (s) => waitFor(() => {
  if (s.ended && s.chunks === 0) throw new Error(`${s.model}: the stream ended before its first token: ${s.error}`);
  return s.chunks > 0;
}, `${s.model} streaming`, 30000);

// The picker's view of one scrape, read as the extractor reads it (newest lora_requests_info sample).
async function view(M) {
  const f = await scrape(srv.url);
  const one = (name) => {
    const fam = f[name];
    assert(fam, `${name} is exported`);
    assertEq(fam.type, 'GAUGE', `${name} is a gauge`);
    assertEq(fam.metrics.length, 1, `${name}: one series (the picker reads one)`);
    return Number(fam.metrics[0].value);
  };
  const lora = f[M.lora];
  assert(lora && lora.metrics.length >= 1, `${M.lora} has a sample`);
  assertEq(lora.type, 'GAUGE', `${M.lora} is a gauge`);
  const newest = lora.metrics.reduce((a, b) => (Number(b.value) > Number(a.value) ? b : a));
  const list = (v) => (v ?? '').split(',').map((x) => x.trim()).filter(Boolean).sort();
  return { waiting: one(M.queue), running: one(M.running), kv: one(M.kv), stamp: Number(newest.value),
    labels: newest.labels, runningAdapters: list(newest.labels.running_lora_adapters),
    waitingAdapters: list(newest.labels.waiting_lora_adapters), fams: f };
}
const nowS = () => Date.now() / 1000;

await run([
  ['manifests: core objects validate against the Kubernetes and Gateway API schemas', async () => {
    const ajv = new Ajv({ allErrors: true });
    const schema = JSON.parse(readFileSync(path.join(ROOT, 'tests/fixtures/k8s/inference-extension.schema.json'), 'utf8'));
    ajv.addSchema(schema, 'ext');
    const seen = [];
    for (const { file, obj } of docs) {
      const what = `${file}: ${obj.kind} ${obj.metadata?.name}`;
      assert(typeof obj.apiVersion === 'string' && typeof obj.kind === 'string', `${what}: apiVersion and kind`);
      if (obj.kind !== 'Namespace') assertEq(obj.metadata?.namespace, find('Namespace').metadata.name, `${what}: namespace`);
      let validate;
      if (schema.$defs[obj.kind]) {
        validate = () => {
          if (!ajv.validate(`ext#/$defs/${obj.kind}`, obj)) throw new Error(ajv.errorsText(ajv.errors));
        };
      } else {
        const pkg = obj.apiVersion.startsWith('gateway.networking.k8s.io/') ? '@kubernetes-models/gateway-api' : 'kubernetes-models';
        const mod = path.join(NPM, 'node_modules', pkg, obj.apiVersion, `${obj.kind}.js`);
        assert(existsSync(mod), `${what}: ${pkg} has a schema for ${obj.apiVersion} ${obj.kind}`);
        const Model = (await import(mod))[obj.kind];
        validate = () => new Model(obj).validate();
      }
      try {
        validate();
      } catch (e) {
        throw new Error(`${what} is invalid: ${e.message}`);
      }
      seen.push(obj.kind);
    }
    for (const kind of ['Namespace', 'Secret', 'PersistentVolumeClaim', 'Deployment', 'Service', 'InferencePool',
      'ConfigMap', 'Gateway', 'HTTPRoute', 'InferenceObjective', 'InferenceModelRewrite'])
      assert(seen.includes(kind), `deploy/k8s has a ${kind}`);
    if (!ajv.validate('ext#/$defs/EndpointPickerConfig', eppConfig))
      throw new Error(`the picker's EndpointPickerConfig is invalid: ${ajv.errorsText(ajv.errors)}`);
    // The schemas can fail: a wrong type and a misspelt field are caught.
    const Deployment = (await import(path.join(NPM, 'node_modules/kubernetes-models/apps/v1/Deployment.js'))).Deployment;
    const bad = structuredClone(server);
    bad.spec.template.spec.containers[0].ports[0].containerPort = '8000';
    let threw = false;
    try { new Deployment(bad).validate(); } catch { threw = true; }
    assert(threw, 'a string containerPort fails the Deployment schema');
    const pool = structuredClone(find('InferencePool'));
    pool.spec.targetPort = pool.spec.targetPorts;
    assert(!ajv.validate('ext#/$defs/InferencePool', pool), 'a misspelt InferencePool field fails its schema');
  }],
  ['manifests: the objects reference each other', async () => {
    const podLabels = server.spec.template.metadata.labels;
    assert(subset(server.spec.selector.matchLabels, podLabels), 'Deployment selector matches its pods');
    const svc = find('Service', 'loraplex');
    assert(subset(svc.spec.selector, podLabels), 'Service selects the loraplex pods');
    assertEq(namedPort(ctr, svc.spec.ports[0].targetPort), Number(argValue('--port')), 'Service targets --port');
    const pool = find('InferencePool');
    assert(subset(pool.spec.selector.matchLabels, podLabels), 'InferencePool selects the loraplex pods');
    assert(!subset(pool.spec.selector.matchLabels, eppDeploy.spec.template.metadata.labels), 'and not the picker');
    assertEq(pool.spec.targetPorts.map((p) => p.number), [Number(argValue('--port'))], 'InferencePool targetPorts = --port');
    assertEq(ctr.ports.map((p) => p.containerPort), [Number(argValue('--port'))], 'containerPort = --port');
    const eppSvc = find('Service', pool.spec.endpointPickerRef.name);
    assert(subset(eppSvc.spec.selector, eppDeploy.spec.template.metadata.labels), 'the picker Service selects the picker');
    const extProc = eppSvc.spec.ports.find((p) => p.port === pool.spec.endpointPickerRef.port.number);
    assert(extProc, 'endpointPickerRef.port is a port of the picker Service');
    assertEq(extProc.appProtocol, 'kubernetes.io/h2c', 'ext-proc is gRPC (HTTP/2 cleartext)');
    assertEq(namedPort(eppCtr, extProc.targetPort), Number(eppArg('--grpc-port')), 'the Service reaches --grpc-port');
    assertEq(eppArg('--pool-name'), pool.metadata.name, '--pool-name');
    assertEq(eppArg('--pool-namespace'), pool.metadata.namespace, '--pool-namespace');
    assertEq(eppArg('--pool-group'), pool.apiVersion.split('/')[0], '--pool-group');
    assertEq(eppDeploy.spec.template.spec.serviceAccountName, find('RoleBinding').subjects[0].name, 'picker RBAC subject');
    const names = new Set(eppConfig.plugins.map((p) => p.name ?? p.type));
    for (const prof of eppConfig.schedulingProfiles)
      for (const p of prof.plugins) assert(names.has(p.pluginRef), `profile plugin ${p.pluginRef} is declared`);
    for (const s of eppConfig.dataLayer?.sources ?? []) {
      assert(names.has(s.pluginRef), `data source ${s.pluginRef} is declared`);
      for (const e of s.extractors) assert(names.has(e.pluginRef), `extractor ${e.pluginRef} is declared`);
    }
    const route = find('HTTPRoute');
    assertEq(route.spec.parentRefs[0].name, find('Gateway').metadata.name, 'HTTPRoute attaches to the Gateway');
    const rule = route.spec.rules.find((r) => r.matches.some((x) => x.path?.value === '/v1'));
    assert(rule, 'a rule for /v1');
    assertEq(rule.backendRefs.map((b) => [b.group, b.kind, b.name]), [['inference.networking.k8s.io', 'InferencePool', pool.metadata.name]],
      '/v1 goes to the InferencePool');
    for (const { obj } of docs.filter((d) => d.obj.spec?.poolRef)) assertEq(obj.spec.poolRef.name, pool.metadata.name, `${obj.kind} poolRef`);
    const claims = new Set(docs.filter((d) => d.obj.kind === 'PersistentVolumeClaim').map((d) => d.obj.metadata.name));
    for (const v of pod.volumes.filter((x) => x.persistentVolumeClaim))
      assert(claims.has(v.persistentVolumeClaim.claimName), `claim ${v.persistentVolumeClaim.claimName} exists`);
    assert(typeof KEY === 'string' && KEY.length > 0, `the Secret ${keyRef.name} has the key ${keyRef.key} the Deployment reads`);
  }],
  ['Deployment: image = project version, flags exist, volumes, graceful stop, non-root', async () => {
    const version = /project\(loraplex\s+VERSION\s+([0-9.]+)/.exec(readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8'))[1];
    assertEq(ctr.image, `loraplex:${version}`, 'image tag = project(... VERSION)');
    assertEq(server.metadata.labels['app.kubernetes.io/version'], version, 'version label');
    const help = execFileSync(BIN, ['serve', '--help'], { encoding: 'utf8' });
    const known = new Set(help.match(/--[a-z0-9][a-z0-9-]*/g));
    assert(known.has('--max-loras') && known.size > 20, 'the help lists the flags');
    assertEq(args[0], 'serve', 'the container runs `loraplex serve` (ENTRYPOINT loraplex)');
    const flags = args.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]);
    for (const f of flags) assert(known.has(f), `${f} is a flag of loraplex serve`);
    for (const f of ['--lora-root', '--enable-lora-resolver', '--allow-runtime-lora-updating', '--max-loras', '--shutdown-timeout'])
      assert(flags.includes(f), `the Deployment passes ${f}`);
    assertEq(argValue('--host'), '0.0.0.0', 'listens on the pod IP');
    const mounts = Object.fromEntries(ctr.volumeMounts.map((v) => [v.mountPath, v]));
    assert(mounts[args[1]]?.readOnly, `the model folder ${args[1]} is a read-only mount`);
    assert(mounts[argValue('--lora-root')]?.readOnly, '--lora-root is the read-only adapter mount');
    assertEq(pod.volumes.find((v) => v.name === mounts[argValue('--lora-root')].name).persistentVolumeClaim.readOnly, true, 'adapter claim read-only');
    assertEq(find('PersistentVolumeClaim', pod.volumes.find((v) => v.name === mounts[argValue('--lora-root')].name)
      .persistentVolumeClaim.claimName).spec.accessModes, ['ReadOnlyMany'], 'the adapter volume is shared read-only');
    const preStop = ctr.lifecycle?.preStop?.exec?.command ?? [];
    const preStopS = preStop[0]?.endsWith('sleep') ? Number(preStop[1]) : 0;
    const shutdown = Number(argValue('--shutdown-timeout'));
    assert(pod.terminationGracePeriodSeconds > shutdown + preStopS,
      `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} > preStop ${preStopS} + --shutdown-timeout ${shutdown}`);
    assertEq(pod.securityContext.runAsNonRoot, true, 'runAsNonRoot');
    assertEq([pod.securityContext.runAsUser, pod.securityContext.runAsGroup], [10001, 10001], 'the image user loraplex (10001)');
    assertEq(ctr.securityContext.allowPrivilegeEscalation, false, 'no privilege escalation');
    assertEq(ctr.resources.requests.cpu, ctr.resources.limits.cpu, 'CPU requests = limits (whole cores)');
    assertEq(argValue('--threads'), String(ctr.resources.limits.cpu), '--threads = the CPU limit');
    assertEq(ctr.startupProbe.httpGet.path, '/health', 'startupProbe on /health');
    assertEq(ctr.readinessProbe.httpGet.path, '/health', 'readinessProbe on /health');
    for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe'])
      assertEq(namedPort(ctr, ctr[p].httpGet.port), Number(argValue('--port')), `${p} port = --port`);
  }],
  ['the Deployment\'s args start a server; the key guards /v1, not /metrics or the probes', async () => {
    srv = await startServer(m.model, serveArgs(), { env: { LORAPLEX_API_KEY: KEY } });
    for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const r = await fetch(`${srv.url}${ctr[p].httpGet.path}`);
      assertEq(r.status, 200, `${p} ${ctr[p].httpGet.path} on a ready server`);
    }
    assertEq((await fetch(`${srv.url}/metrics`)).status, 200, 'the picker scrapes /metrics without a key');
    assertEq((await fetch(`${srv.url}/v1/models`)).status, 401, '/v1 needs the key');
    const load = (headers) => fetch(`${srv.url}/v1/load_lora_adapter`, { method: 'POST', headers,
      body: JSON.stringify({ lora_name: 'x' }) });
    assertEq((await load({ 'Content-Type': 'application/json' })).status, 401, 'runtime loading needs the key');
    assertEq((await load(auth)).status, 400, 'runtime loading is enabled (400: no lora_path given)');
  }],
  ['gateway metrics: idle', async () => {
    const M = pickerMetrics();
    const v = await view(M);
    assertEq([v.waiting, v.running, v.kv], [0, 0, 0], 'nothing waits, runs or holds KV');
    assertEq([v.runningAdapters, v.waitingAdapters], [[], []], 'no adapter lists');
    assertEq(v.labels.max_lora, overrides['--max-loras'], 'max_lora = --max-loras');
    assert(Math.abs(v.stamp - nowS()) < 60, `${M.lora} value is the unix time of the sample: ${v.stamp}`);
    const info = v.fams[M.cacheInfo];
    assert(info && info.metrics.length === 1, `${M.cacheInfo} has one series`);
    const bs = Number(info.metrics[0].labels[M.blockSizeLabel]);
    const nb = Number(info.metrics[0].labels[M.numBlocksLabel]);
    assert(Number.isInteger(bs) && bs > 0 && Number.isInteger(nb) && nb > 0, `block_size ${bs}, num_gpu_blocks ${nb}`);
    assert(bs * nb >= KV_TOKENS && bs * nb < KV_TOKENS + bs, `blocks x block size ${bs * nb} = --kv-cache-tokens ${KV_TOKENS} in whole blocks`);
  }],
  ['gateway metrics: running and waiting requests, their adapters, KV use, the newest sample', async () => {
    const M = pickerMetrics();
    const capacity = (v) => Number(v.fams[M.cacheInfo].metrics[0].labels[M.numBlocksLabel]) *
      Number(v.fams[M.cacheInfo].metrics[0].labels[M.blockSizeLabel]);
    // Adapters come from the shared root on first use (--enable-lora-resolver), as in the cluster.
    const a = stream('medical-qa');
    const b = stream('legal-summary');
    await streaming(a);
    await streaming(b);
    // Both slots and both running places are taken: these two wait (code-review for a slot too).
    const c = stream('code-review');
    const a2 = stream('medical-qa');
    const all = [a, b, c, a2];
    try {
      // Eventually (a request submitted during an engine step is counted as waiting at once, but its
      // adapter is listed from the next step on), then steadily while nothing changes.
      const expected = { running: 2, waiting: 2, runningAdapters: ['legal-summary', 'medical-qa'],
        waitingAdapters: ['code-review', 'medical-qa'] };
      await waitFor(async () => {
        const v = await view(M);
        const got = { running: v.running, waiting: v.waiting, runningAdapters: v.runningAdapters, waitingAdapters: v.waitingAdapters };
        return JSON.stringify(got) === JSON.stringify(expected) || got;
      }, `the picker's view: ${JSON.stringify(expected)}`);
      const held = a.chunks + b.chunks - 2 + (await promptTokens(a.model)) + (await promptTokens(b.model));
      const v1 = await view(M);
      assertEq([v1.running, v1.waiting], [2, 2], `${M.running} / ${M.queue} count this test's requests`);
      assert(a.chunks > 0 && b.chunks > 0 && c.chunks === 0 && a2.chunks === 0, 'the first two stream, the others wait');
      assertEq(v1.runningAdapters, expected.runningAdapters, 'running_lora_adapters: the adapters with running requests');
      assertEq(v1.waitingAdapters, expected.waitingAdapters, 'waiting_lora_adapters: the adapters with waiting requests');
      assert(!v1.runningAdapters.includes('french-support') && !v1.waitingAdapters.includes('french-support'),
        'an adapter without requests is in neither list');
      assert(v1.runningAdapters.length <= Number(v1.labels.max_lora), 'no more running adapters than max_lora');
      assert(v1.kv > 0 && v1.kv <= 1, `${M.kv} is a fraction in (0, 1] while requests hold KV: ${v1.kv}`);
      const cap = capacity(v1);
      assert(v1.kv * cap >= held, `KV in use (${v1.kv} x ${cap} tokens) holds at least the prompts and the tokens streamed so far (${held})`);
      // More tokens held: more KV in use. Wait for a few blocks' worth of tokens per stream.
      const bs = cap / Number(v1.fams[M.cacheInfo].metrics[0].labels[M.numBlocksLabel]);
      const a0 = a.chunks;
      await waitFor(() => a.chunks >= a0 + 2 * bs + 1 || a.ended, 'more tokens', 30000);
      const v2 = await view(M);
      assert(v2.kv > v1.kv, `KV use rises while requests generate: ${v1.kv} -> ${v2.kv}`);
      assert(v2.stamp >= v1.stamp && Math.abs(v2.stamp - nowS()) < 60, `the newest sample is recent: ${v1.stamp} -> ${v2.stamp}`);
    } finally {
      for (const s of all) s.abort();
      await Promise.all(all.map((s) => s.done));
    }
    // Finished (here: abandoned) requests leave both lists and free their KV; the adapters stay loaded.
    await waitFor(async () => {
      const v = await view(M);
      return (v.running === 0 && v.waiting === 0 && v.kv === 0 && v.runningAdapters.length === 0 && v.waitingAdapters.length === 0) ||
        { running: v.running, waiting: v.waiting, kv: v.kv, lists: [v.runningAdapters, v.waitingAdapters] };
    }, 'idle again');
  }],
  ['SIGTERM: readiness path 503 (draining), liveness path 200, /metrics still served, exit 0', async () => {
    const s = stream('french-support');
    await streaming(s);
    srv.proc.kill('SIGTERM');
    await waitFor(async () => (await fetch(`${srv.url}${ctr.readinessProbe.httpGet.path}`)).status === 503, 'readiness 503 while draining');
    assertEq((await fetch(`${srv.url}${ctr.livenessProbe.httpGet.path}`)).status, 200, 'liveness 200 while draining: no restart');
    assertEq((await fetch(`${srv.url}/metrics`)).status, 200, 'the picker still scrapes a draining pod');
    assert(!s.ended, 'the in-flight request is still streaming');
    s.abort();
    await s.done;
    const { code, signal } = await srv.exited;
    assertEq([code, signal], [0, null], `drained and exited 0\n${srv.log().slice(-2000)}`);
  }],
], async () => {
  try {
    if (srv && srv.proc.exitCode === null) await srv.stop();
  } finally {
    m.cleanup();
  }
});
