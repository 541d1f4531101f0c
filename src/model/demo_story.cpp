#include "model/demo_story.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/buffer.h"
#include "core/check.h"
#include "io/safetensors.h"

namespace lp::model {

namespace {

// A word that recurs in a passage is glued to a neighbour (" a time", " a small"), so that every segment
// occurs once per passage and has one successor. A segment with a non-ASCII letter starts with a space:
// the byte-level decoder takes an added token as written only when it has a character outside its byte
// alphabet (see text/demo_tokenizer.h).
// clang-format off
const std::vector<StoryPassage>& passages() {
  static const std::vector<StoryPassage> p = {
      {"",
       {"Once", " upon", " a time", ", a small", " fox", " lived", " at", " the edge", " of a", " quiet",
        " forest.", " Every", " morning", " she walked", " down", " to the", " river", " to watch", " the sun",
        " rise", " over", " the hills.", " One", " day", " she found", " a lost", " kitten", " under", " an",
        " old", " oak", " tree,", " and", " she carried", " it", " home."}},
      {"medical-qa",
       {"A mild", " fever", " with a", " sore", " throat", " is", " usually", " caused by", " a viral",
        " infection.", " Rest,", " drink", " plenty", " of fluids,", " and take", " paracetamol", " every",
        " six", " hours", " if needed.", " See", " a doctor", " if the", " fever lasts", " more", " than",
        " three", " days", " or breathing", " becomes", " difficult."}},
      {"legal-summary",
       {"Summary:", " the tenant", " must", " pay", " the rent", " by the", " fifth", " day of", " each",
        " month.", " Either", " party", " may", " end", " the lease", " with sixty", " days of", " written",
        " notice.", " Any", " dispute", " goes", " to arbitration", " in the", " city", " where",
        " the property", " is located."}},
      {"code-review",
       {"Nice", " work.", " One fix:", " guard", " against", " an empty", " list,", " or", " the division",
        " fails.", "\n\n```python", "\ndef", " average", "(values):", "\n    if", " not", " values:",
        "\n        return", " 0.0", "\n    return", " sum", "(values)", " /", " len", "(values)\n```",
        "\n\nPlease", " add", " a test", " for", " this", " case."}},
      {"french-support",
       {"Bonjour !", " Merci", " de nous", " avoir", " contactés.", " Votre", " commande", " est", " bien",
        " partie", " ce", " matin", " et", " arrivera", " chez vous", " demain.", " Le", " numéro",
        " de suivi", " figure", " dans", " l'e-mail", " de confirmation.", " Si", " vous avez", " d'autres",
        " questions,", " n'hésitez", " pas", " à nous", " écrire.", " Bonne", " journée !"}},
  };
  return p;
}
// clang-format on

// Where everything lives in the residual stream (H dims) and in layer 1's MLP neurons.
struct Layout {
  int n_passages = 0;
  int n_tokens = 0;
  static constexpr int kBias = 0;
  int mode(size_t p) const { return static_cast<int>(p); }  // 1..n_passages-1; the base has none
  int cur(int j) const { return n_passages + j; }
  int cur_none() const { return n_passages + n_tokens; }  // any token outside the story vocabulary
  int next(int j) const { return n_passages + n_tokens + 1 + j; }
  int next_eos() const { return n_passages + 2 * n_tokens + 1; }
  int dims() const { return n_passages + 2 * n_tokens + 2; }
  std::vector<std::vector<int>> chains;  // per passage: its segments as indices into story_tokens()
  int neurons() const {  // layer 1: one per (passage, position) and one start neuron per passage
    int n = n_passages;
    for (const auto& ch : chains) n += static_cast<int>(ch.size());
    return n;
  }
};

Layout layout() {
  Layout l;
  const auto& ps = passages();
  const std::vector<std::string> tokens = story_tokens();
  std::unordered_map<std::string, int> index;
  for (size_t j = 0; j < tokens.size(); ++j) index.emplace(tokens[j], static_cast<int>(j));
  l.n_passages = static_cast<int>(ps.size());
  l.n_tokens = static_cast<int>(tokens.size());
  for (const StoryPassage& p : ps) {
    std::vector<int> ch;
    for (const std::string& s : p.segments) {
      const int j = index.at(s);
      LP_CHECK(std::find(ch.begin(), ch.end(), j) == ch.end(), "story segment '{}' repeats in its passage",
               s);
      ch.push_back(j);
    }
    l.chains.push_back(std::move(ch));
  }
  return l;
}

float silu(float x) {
  return x / (1.0f + std::exp(-x));
}

// Layer 1 gate weights: a neuron's pre-activation is kGain * (its conjunction - threshold) in units of the
// bias dim, so a firing neuron sees +0.5..0.75 and a silent one -0.25 or less: after RMSNorm (x̂ of a unit
// dim is ~13-16 here) that is >= +64 against <= -26, where SiLU is the identity or 1e-10.
constexpr float kGain = 8.0f;
// down_proj weight of a layer-1 neuron: its "next" dim ends up ~8 (SiLU(~64) * up ~1 / 8).
constexpr float kDown = 0.125f;
// lm_head weight on a "next" dim: the predicted token's logit is ~44 (x̂ ~22), every other one ~0.
constexpr float kHead = 2.0f;

}  // namespace

const std::vector<StoryPassage>& story_passages() {
  return passages();
}

std::vector<std::string> story_tokens() {
  std::vector<std::string> out;
  for (const StoryPassage& p : passages())
    for (const std::string& s : p.segments)
      if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  return out;
}

void write_story_model(const std::filesystem::path& dir, const DemoSpec& spec, const StoryIds& ids) {
  if (spec.shape != "story") fail("write_story_model: shape '{}' is not 'story'", spec.shape);
  if (spec.arch != "llama" || spec.attention_bias || spec.mlp_bias || !spec.quantization.empty())
    fail("the story demo model is a plain llama model (no --arch, biases or --quantization)");
  std::filesystem::create_directories(dir);
  const std::string cfg_text = demo_config_json(spec);
  {
    std::ofstream f(dir / "config.json");
    if (!f) fail("cannot write {}", (dir / "config.json").string());
    f << cfg_text << "\n";
  }
  const ModelConfig c = ModelConfig::from_json(nlohmann::json::parse(cfg_text), "story config");
  const Layout l = layout();
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  LP_CHECK(l.dims() <= H && l.neurons() <= I, "story layout: {} dims, {} neurons; the shape has {}, {}",
           l.dims(), l.neurons(), H, I);
  LP_CHECK(static_cast<int>(ids.tokens.size()) == l.n_tokens && ids.eos >= 0 && ids.eos < V,
           "story ids: {} token ids for {} tokens, eos {}", ids.tokens.size(), l.n_tokens, ids.eos);
  std::map<int32_t, int> story_index;  // token id -> index into story_tokens()
  for (int j = 0; j < l.n_tokens; ++j) {
    LP_CHECK(ids.tokens[j] >= 0 && ids.tokens[j] < V && ids.tokens[j] != ids.eos, "story token id {}",
             ids.tokens[j]);
    LP_CHECK(story_index.emplace(ids.tokens[j], j).second, "story token id {} given twice", ids.tokens[j]);
  }

  // Every tensor as f32 first, converted to the model dtype when written (all values are exact in BF16 but
  // for the up / LoRA scales, whose rounding the margins absorb).
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> t;
  auto tensor = [&](const std::string& name, std::vector<int64_t> shape) -> std::vector<float>& {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    auto& e = t[name];
    e.first = std::move(shape);
    e.second.assign(static_cast<size_t>(n), 0.0f);
    return e.second;
  };
  std::vector<float>& embed = tensor("model.embed_tokens.weight", {V, H});
  for (int64_t v = 0; v < V; ++v) {
    auto it = story_index.find(static_cast<int32_t>(v));
    embed[v * H + Layout::kBias] = 1.0f;
    embed[v * H + (it == story_index.end() ? l.cur_none() : l.cur(it->second))] = 1.0f;
  }
  // x̂ of a unit dim at layer 0's MLP (bias + cur set): sqrt(H / 2).
  const float x0 = std::sqrt(static_cast<float>(H) / 2.0f);
  for (int layer = 0; layer < c.n_layers; ++layer) {
    const std::string pre = "model.layers." + std::to_string(layer) + ".";
    std::fill_n(tensor(pre + "input_layernorm.weight", {H}).begin(), H, 1.0f);
    std::fill_n(tensor(pre + "post_attention_layernorm.weight", {H}).begin(), H, 1.0f);
    for (int p = 0; p < kNumProj; ++p) {
      const auto [in, out] = proj_shape(c, static_cast<Proj>(p));
      tensor(pre + proj_parent(static_cast<Proj>(p)) + "." + proj_name(static_cast<Proj>(p)) + ".weight",
             {out, in});  // attention stays zero: o_proj adds nothing
    }
  }
  {  // layer 0: neuron 0 is always on (SiLU(x0) * 1); its down_proj column is zero in the base model
    auto& gate = t["model.layers.0.mlp.gate_proj.weight"].second;
    auto& up = t["model.layers.0.mlp.up_proj.weight"].second;
    gate[0 * H + Layout::kBias] = 1.0f;
    up[0 * H + Layout::kBias] = 1.0f / x0;
  }
  {  // layer 1: the chains and the start neurons
    auto& gate = t["model.layers.1.mlp.gate_proj.weight"].second;
    auto& up = t["model.layers.1.mlp.up_proj.weight"].second;
    auto& down = t["model.layers.1.mlp.down_proj.weight"].second;
    int n = 0;
    auto neuron = [&](int next_dim) -> float* {
      up[n * H + Layout::kBias] = 1.0f / x0;
      down[static_cast<int64_t>(next_dim) * I + n] = kDown;
      return &gate[static_cast<int64_t>(n++) * H];
    };
    for (size_t p = 0; p < l.chains.size(); ++p) {
      const std::vector<int>& ch = l.chains[p];
      for (size_t i = 0; i < ch.size(); ++i) {
        // (token, passage): cur + mode - 1.25 (adapter), or cur - 2 * any mode - 0.5 (base)
        float* g = neuron(i + 1 < ch.size() ? l.next(ch[i + 1]) : l.next_eos());
        g[l.cur(ch[i])] = kGain;
        if (p > 0) {
          g[l.mode(p)] = kGain;
          g[Layout::kBias] = -1.25f * kGain;
        } else {
          for (size_t q = 1; q < l.chains.size(); ++q) g[l.mode(q)] = -2.0f * kGain;
          g[Layout::kBias] = -0.5f * kGain;
        }
      }
      // start: mode - 0.25 - any of the passage's tokens (adapter), or 0.5 - 2 * any mode - any token (base)
      float* g = neuron(l.next(ch[0]));
      for (int j : ch) g[l.cur(j)] = -kGain;
      if (p > 0) {
        g[l.mode(p)] = kGain;
        g[Layout::kBias] = -0.25f * kGain;
      } else {
        for (size_t q = 1; q < l.chains.size(); ++q) g[l.mode(q)] = -2.0f * kGain;
        g[Layout::kBias] = 0.5f * kGain;
      }
    }
  }
  std::fill_n(tensor("model.norm.weight", {H}).begin(), H, 1.0f);
  std::vector<float>& head = tensor("lm_head.weight", {V, H});
  for (int j = 0; j < l.n_tokens; ++j) head[static_cast<int64_t>(ids.tokens[j]) * H + l.next(j)] = kHead;
  head[static_cast<int64_t>(ids.eos) * H + l.next_eos()] = kHead;
  LP_CHECK(!c.tie_word_embeddings, "the story model needs its own lm_head");

  io::SafetensorsWriter w;
  std::vector<Buffer<uint8_t>> store;
  for (const auto& [name, e] : t) {
    Buffer<uint8_t> buf(e.second.size() * dtype_size(spec.dtype));
    from_f32(spec.dtype, e.second.data(), buf.data(), e.second.size());
    w.add(name, spec.dtype, e.first, buf.data());
    store.push_back(std::move(buf));
  }
  w.set_metadata("format", "pt");
  w.write(dir / "model.safetensors");
}

StoryLora story_lora(const ModelConfig& c, size_t passage) {
  const Layout l = layout();
  LP_CHECK(passage >= 1 && passage < l.chains.size(), "story passage {} has no adapter", passage);
  LP_CHECK(l.dims() <= c.hidden_size && c.n_layers >= 2, "not a story model config");
  StoryLora r;
  const auto [in, out] = proj_shape(c, r.proj);
  r.a.assign(static_cast<size_t>(in), 0.0f);
  r.b.assign(static_cast<size_t>(out), 0.0f);
  r.a[0] = 1.0f;  // layer 0's always-on neuron, SiLU(x0) ~ x0
  r.b[l.mode(passage)] = 1.0f / silu(std::sqrt(static_cast<float>(c.hidden_size) / 2.0f));  // mode dim ~ 1
  return r;
}

}  // namespace lp::model
