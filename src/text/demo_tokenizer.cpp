#include "text/demo_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/check.h"
#include "text/tokenizer_regex.h"
#include "text/tokenizer_utf8.h"

namespace lp::text {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Llama 3's pre-tokenization regex.
constexpr std::string_view kSplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Training text for the first merges: plain English and a little code, so common words and operators
// become single tokens.
constexpr std::string_view kTrainingText = R"(
The server loads one base model and many small adapters. Each request names the adapter it wants, and the
scheduler puts requests for different adapters into the same batch. The model runs every linear layer once
for all tokens in the batch, then adds a low-rank correction for each token from the adapter that token
belongs to. This is how one machine can serve hundreds of fine-tuned variants of the same model at the
cost of one.

When a request arrives, the text is turned into tokens, the tokens wait in a queue, and the engine thread
takes them when there is room in the key-value cache. Tokens come back one at a time. The client sees the
answer grow word by word, and it can stop the request at any time. If it does, the engine frees the memory
that the request was using at the next step.

There are three places an adapter can live: on disk, in host memory, and in a slot next to the model. An
adapter in a slot is ready to use. An adapter in host memory can be copied into a slot between two steps.
An adapter on disk must be read, checked and converted first, which takes longer, so the loader thread does
it while other requests keep running. The number of slots is fixed when the server starts.

What is a token? It is a piece of text: a whole word, part of a word, a space and a word, a number, or a
single byte. Common words such as the, and, of, to, in, is, that, for, it, with, as, was, on, are, be, this,
have, from, or, by, one, had, not, but, what, all, were, when, we, there, can, an, your, which, their, said,
if, do, will, each, about, how, up, out, them, then, she, many, some, so, these, would, other, into, has,
more, her, two, like, him, see, time, could, no, make, than, first, been, its, who, now, people, my, made,
over, did, down, only, way, find, use, may, water, long, little, very, after, words, called, just, where,
most, know, get, through, back, much, before, go, good, new, write, our, used, me, man, too, any, day, same,
right, look, think, also, around, another, came, come, work, three, word, must, because, does, part, even,
place, well, such, here, take, why, things, help, put, years, different, away, again, off, went, old,
number, great, tell, men, say, small, every, found, still, between, name, should, home, big, give, air,
line, set, own, under, read, last, never, us, left, end, along, while, might, next, sound, below, saw,
something, thought, both, few, those, always, looked, show, large, often, together, asked, house, don't,
world, going, want, school, important, until, form, food, keep, children, feet, land, side, without, boy,
once, animals, life, enough, took, sometimes, four, head, above, kind, began, almost, live, page, got, earth,
need, far, hand, high, year, mother, light, parts, country, father, let, night, following, picture, being,
study, second, eyes, soon, times, story, boys, since, white, days, ever, paper, hard, near, sentence, better,
best, across, during, today, others, however, sure, means, knew, it's, try, told, young, miles, sun, ways,
thing, whole, hear, example, heard, several, change, answer, room, sea, against, top, turned, learn, point,
city, play, toward, five, using, himself, usually. I'm sure you'll see why we've kept it simple; they're
right that it'd work.

def forward(self, x, adapter_ids):
    # Base projection for every token, then the low-rank update per token.
    y = self.base(x)
    for i, slot in enumerate(adapter_ids):
        if slot >= 0:
            y[i] += self.scale[slot] * (self.B[slot] @ (self.A[slot] @ x[i]))
    return y

class Scheduler:
    def __init__(self, max_batch_tokens=8192, max_loras=4):
        self.waiting = []
        self.running = []
        self.max_batch_tokens = max_batch_tokens
        self.max_loras = max_loras

    def step(self):
        batch = self.admit()
        return [request.id for request in batch if not request.finished]

for (int i = 0; i < n; ++i) {
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += a[i * k + j] * b[j];
  out[i] = sum;
}

std::vector<int32_t> ids = tokenizer.encode(text, /*add_special_tokens=*/true);
if (ids.empty()) return std::nullopt;
const auto& [key, value] = *map.begin();
{"model": "base", "messages": [{"role": "user", "content": "Hello!"}], "stream": true, "max_tokens": 128}
<html><body><p>Hello, world!</p></body></html>
https://example.com/v1/chat/completions?stream=true
0 1 2 3 4 5 6 7 8 9 10 11 12 16 32 64 100 128 256 512 1000 1024 2048 4096 8192 2024 2025 3.14 0.5 1e-5
)";

// splitmix64: a small, well-mixed deterministic generator.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

struct Vocab {
  std::vector<std::string> tokens;  // id → byte-level text
  std::unordered_map<std::string, int32_t> ids;
  std::vector<std::pair<int32_t, int32_t>> merges;

  int32_t add(std::string token) {
    const auto id = static_cast<int32_t>(tokens.size());
    ids.emplace(token, id);
    tokens.push_back(std::move(token));
    return id;
  }
};

// Learns up to `limit` merges by classic BPE training on kTrainingText (most frequent adjacent pair first;
// ties broken by a seeded hash so different seeds give different but deterministic vocabularies). A pair
// whose merged text is in `reserved` (the added tokens' contents) is never merged: one text, one id.
void train_merges(Vocab& v, size_t limit, uint64_t seed, const std::unordered_set<std::string>& reserved) {
  const auto& alphabet = byte_level_alphabet();
  const Regex split(kSplitRegex, "demo tokenizer");
  std::vector<std::pair<size_t, size_t>> spans;
  split.find_all(kTrainingText, &spans);
  std::map<std::string, int64_t> word_counts;
  for (const auto& [s, e] : spans) ++word_counts[std::string(kTrainingText.substr(s, e - s))];
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  for (const auto& [w, c] : word_counts) {
    std::vector<int32_t> symbols;
    for (unsigned char b : w) symbols.push_back(v.ids.at(alphabet[b]));
    words.push_back(std::move(symbols));
    counts.push_back(c);
  }
  auto tie_hash = [seed](uint64_t key) { return SplitMix64{seed ^ key}.next(); };
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_set<uint64_t> banned;
  while (v.merges.size() < limit) {
    pair_counts.clear();
    for (size_t w = 0; w < words.size(); ++w)
      for (size_t i = 0; i + 1 < words[w].size(); ++i)
        pair_counts[(uint64_t(uint32_t(words[w][i])) << 32) | uint32_t(words[w][i + 1])] += counts[w];
    uint64_t best = 0;
    int64_t best_count = 1;  // a pair must occur at least twice
    for (const auto& [key, c] : pair_counts) {
      if (banned.count(key)) continue;
      if (c > best_count || (c == best_count && best_count > 1 && tie_hash(key) < tie_hash(best))) {
        best = key;
        best_count = c;
      }
    }
    if (best_count < 2) break;
    const auto a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xFFFFFFFF);
    std::string joined = v.tokens[a] + v.tokens[b];
    if (reserved.count(joined)) {
      banned.insert(best);
      continue;
    }
    if (v.ids.count(joined)) break;  // cannot happen with byte-level words; stop rather than loop
    const int32_t merged = v.add(std::move(joined));
    v.merges.emplace_back(a, b);
    for (auto& symbols : words) {
      size_t out = 0;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == a && symbols[i + 1] == b) {
          symbols[out++] = merged;
          ++i;
        } else {
          symbols[out++] = symbols[i];
        }
      }
      symbols.resize(out);
    }
  }
}

// Adds merges of an existing token with a byte token until there are `target` merges. Tokens stay short
// (<= 16 bytes) and every merged string is new (and not `reserved`), so the merge list stays valid.
void fill_merges(Vocab& v, size_t target, uint64_t seed, const std::unordered_set<std::string>& reserved) {
  SplitMix64 rng{seed * 0x2545F4914F6CDD1Dull + 1};
  // Prefer letters, digits and space for the right-hand byte so filler tokens look like text pieces.
  const std::string_view common = " etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,-_";
  const auto& alphabet = byte_level_alphabet();
  size_t attempts = 0;
  while (v.merges.size() < target) {
    LP_CHECK(++attempts < target * 64 + 1'000'000, "demo tokenizer: cannot find new merges");
    const auto a = static_cast<int32_t>(rng.next() % v.tokens.size());
    const uint64_t r = rng.next();
    const unsigned char byte = (r & 3) ? static_cast<unsigned char>(common[(r >> 2) % common.size()])
                                       : static_cast<unsigned char>((r >> 2) & 0xFF);
    const int32_t b = v.ids.at(alphabet[byte]);
    if (v.tokens[a].size() + v.tokens[b].size() > 16) continue;
    std::string joined = v.tokens[a] + v.tokens[b];
    if (v.ids.count(joined) || reserved.count(joined)) continue;
    v.add(std::move(joined));
    v.merges.emplace_back(a, b);
  }
}

constexpr std::string_view kChatTemplate =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% "
    "endif %}";

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  if (!f) fail("cannot write {}", path.string());
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!f) fail("error writing {}", path.string());
}

}  // namespace

void write_demo_tokenizer(const fs::path& dir, int vocab_size, uint64_t seed,
                          std::span<const std::string> added_tokens) {
  constexpr int kSpecials = static_cast<int>(std::size(kDemoSpecialTokens));
  const int n_added = static_cast<int>(added_tokens.size());
  if (vocab_size < 256 + 1 + n_added + kSpecials)
    fail("demo tokenizer: vocab_size {} is too small (at least {})", vocab_size,
         256 + 1 + n_added + kSpecials);
  if (vocab_size > (1 << 22)) fail("demo tokenizer: vocab_size {} is too large", vocab_size);
  const auto merges_wanted = static_cast<size_t>(vocab_size - 256 - n_added - kSpecials);

  Vocab v;
  v.tokens.reserve(static_cast<size_t>(vocab_size));
  v.ids.reserve(static_cast<size_t>(vocab_size));
  for (const std::string& t : byte_level_alphabet()) v.add(t);
  const std::unordered_set<std::string> reserved(added_tokens.begin(), added_tokens.end());
  if (reserved.size() != added_tokens.size()) fail("demo tokenizer: the added tokens are not distinct");
  for (const std::string& t : added_tokens) {
    // A byte token's text ("a", "Ġ") would give the added token a second id.
    if (t.empty() || v.ids.count(t)) fail("demo tokenizer: added token '{}' is empty or a byte token", t);
    for (std::string_view s : kDemoSpecialTokens)
      if (t == s) fail("demo tokenizer: added token '{}' is a special token", t);
  }
  train_merges(v, std::min<size_t>(merges_wanted, 2000), seed, reserved);
  fill_merges(v, merges_wanted, seed, reserved);

  json vocab = json::object();
  for (size_t id = 0; id < v.tokens.size(); ++id) vocab[v.tokens[id]] = id;
  json merges = json::array();
  for (const auto& [a, b] : v.merges) merges.push_back(json::array({v.tokens[a], v.tokens[b]}));
  json added = json::array();
  const auto first_added = static_cast<int>(v.tokens.size());
  for (int i = 0; i < n_added; ++i)
    added.push_back({{"id", first_added + i},
                     {"content", added_tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", false}});
  const int first_special = first_added + n_added;
  for (int i = 0; i < kSpecials; ++i)
    added.push_back({{"id", first_special + i},
                     {"content", std::string(kDemoSpecialTokens[i])},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const std::string bos(kDemoSpecialTokens[0]);
  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "Split"},
                                        {"pattern", {{"Regex", std::string(kSplitRegex)}}},
                                        {"behavior", "Isolated"},
                                        {"invert", false}},
                                       {{"type", "ByteLevel"},
                                        {"add_prefix_space", false},
                                        {"trim_offsets", true},
                                        {"use_regex", false}}})}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens",
         {{bos, {{"id", bos}, {"ids", json::array({first_special})}, {"tokens", {bos}}}}}}}},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}},
  };
  json config = {
      {"tokenizer_class", "PreTrainedTokenizerFast"},
      {"bos_token", bos},
      {"eos_token", std::string(kDemoSpecialTokens[3])},
      {"pad_token", std::string(kDemoSpecialTokens[1])},
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"clean_up_tokenization_spaces", false},
      {"model_max_length", 131072},
      {"chat_template", std::string(kChatTemplate)},
  };
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create {}: {}", dir.string(), ec.message());
  write_text(dir / "tokenizer.json", tokenizer.dump());
  write_text(dir / "tokenizer_config.json", config.dump(2));
}

}  // namespace lp::text
