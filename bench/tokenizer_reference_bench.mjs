// The reference side of bench/tokenizer_bench.cpp: times @lenml/tokenizers (transformers.js) loading a
// tokenizer folder and encoding a text file, and prints one JSON line with the times and a checksum of
// the ids so the C++ side can confirm both produced the same ids.
// Usage: node tokenizer_reference_bench.mjs TOKENIZER_DIR TEXT_FILE REPEATS
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const lib = path.join(here, "..", "tests", "fixtures", "npm", "node_modules", "@lenml", "tokenizers", "dist", "main.mjs");
const { TokenizerLoader } = await import(lib);

const [dir, textPath, repeatsArg] = process.argv.slice(2);
const repeats = Number(repeatsArg ?? 3);
const text = readFileSync(textPath, "utf8");

const t0 = process.hrtime.bigint();
const tokenizerJSON = JSON.parse(readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
let tokenizerConfig = {};
try {
  tokenizerConfig = JSON.parse(readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
} catch {}
const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;

const encodeMs = [];
let ids = [];
for (let r = 0; r < repeats; ++r) {
  const s = process.hrtime.bigint();
  ids = tok.encode(text, { add_special_tokens: false });
  encodeMs.push(Number(process.hrtime.bigint() - s) / 1e6);
}
// FNV-1a over the ids, as in the C++ side.
let h = 0xcbf29ce484222325n;
for (const id of ids) {
  h ^= BigInt(id);
  h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
}
console.log(JSON.stringify({ load_ms: loadMs, encode_ms: encodeMs, count: ids.length, fnv: h.toString() }));
