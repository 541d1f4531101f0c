// PEFT adapter folders: a correct adapter loads with PEFT's rank, alpha and scale for every module and its
// weights bit-exact (after the file dtype's rounding); every unsupported or malformed adapter is refused with
// a message naming the field or tensor. Fixtures are written with SafetensorsWriter.
#include "lora/adapter.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/check.h"
#include "io/safetensors.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

using nlohmann::ordered_json;
using ::testing::HasSubstr;

// A small GQA-shaped base: hidden 16, kv 8, intermediate 24, 2 layers.
BaseShapes small_base() {
  BaseShapes b;
  b.n_layers = 2;
  b.dims = {{{16, 16}, {16, 8}, {16, 8}, {16, 16}, {16, 24}, {16, 24}, {24, 16}}};
  return b;
}

std::string tname(int layer, Module m, char half, bool infix = false) {
  return fmt::format("base_model.model.{}.lora_{}.{}weight", module_path(layer, m), half,
                     infix ? "default." : "");
}

// Deterministic, distinct per seed, and not exactly representable in 16-bit types.
std::vector<float> values(size_t n, int seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(0.37f * seed + 0.11f * static_cast<float>(i)) * 0.5f;
  return v;
}

// The values as they come back after a round trip through `t`.
std::vector<float> rounded(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> buf(v.size() * dtype_size(t));
  std::vector<float> out(v.size());
  if (v.empty()) return out;
  from_f32(t, v.data(), buf.data(), v.size());
  to_f32(t, buf.data(), out.data(), v.size());
  return out;
}

class AdapterDir {
 public:
  AdapterDir()
      : config_({{"peft_type", "LORA"},
                 {"r", 4},
                 {"lora_alpha", 8},
                 {"target_modules", {"q_proj", "v_proj"}},
                 {"bias", "none"},
                 {"use_rslora", false},
                 {"use_dora", false},
                 {"fan_in_fan_out", false},
                 {"modules_to_save", nullptr},
                 {"rank_pattern", ordered_json::object()},
                 {"alpha_pattern", ordered_json::object()},
                 {"base_model_name_or_path", "tiny-llama"},
                 {"task_type", "CAUSAL_LM"}}) {}

  ordered_json& config() { return config_; }
  // Adds a tensor of `shape` holding values(seed) in `dtype`; returns the float values written.
  std::vector<float> add(const std::string& name, std::vector<int64_t> shape, int seed,
                         DType dtype = DType::kF32) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    auto v = values(n, seed);
    std::vector<uint8_t> bytes(n * dtype_size(dtype));
    if (n) from_f32(dtype, v.data(), bytes.data(), n);
    tensors_.push_back({name, dtype, std::move(shape), std::move(bytes)});
    return rounded(v, dtype);
  }
  // Both halves of a correct (layer, module) pair of rank r.
  void add_pair(int layer, Module m, int r, bool infix = false, DType dtype = DType::kF32) {
    auto d = small_base().dims[static_cast<int>(m)];
    add(tname(layer, m, 'A', infix), {r, d.in}, layer * 10 + static_cast<int>(m), dtype);
    add(tname(layer, m, 'B', infix), {d.out, r}, 100 + layer * 10 + static_cast<int>(m), dtype);
  }
  const std::filesystem::path& write() {
    test::write_file(dir_ / "adapter_config.json", config_.dump(2));
    io::SafetensorsWriter w;
    for (const auto& t : tensors_) w.add(t.name, t.dtype, t.shape, t.bytes.data());
    w.write(dir_ / "adapter_model.safetensors");
    return dir_.path();
  }
  LoraAdapter load() { return load_adapter(write(), small_base()); }
  std::string error() {
    try {
      load();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  const std::filesystem::path& path() const { return dir_.path(); }

 private:
  struct T {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  test::TempDir dir_{"lora"};
  ordered_json config_;
  std::vector<T> tensors_;
};

std::string config_error(const ordered_json& j) {
  try {
    parse_adapter_config(j, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

ordered_json base_config() {
  return AdapterDir().config();
}

TEST(Adapter, LoadsWithAndWithoutDefaultInfixKeepingValuesAndScale) {
  AdapterDir ad;
  auto a0 = ad.add(tname(0, Module::kQ, 'A', true), {4, 16}, 1);
  auto b0 = ad.add(tname(0, Module::kQ, 'B', true), {16, 4}, 2);
  auto a1 = ad.add(tname(1, Module::kV, 'A'), {4, 16}, 3, DType::kBF16);
  auto b1 = ad.add(tname(1, Module::kV, 'B'), {8, 4}, 4, DType::kF16);
  LoraAdapter lo = ad.load();
  ASSERT_EQ(lo.weights.size(), 2u);
  EXPECT_EQ(lo.config.base_model_name_or_path, "tiny-llama");

  const LoraWeights* q = lo.find(0, Module::kQ);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->rank, 4);
  EXPECT_FLOAT_EQ(q->scale, 2.0f);  // alpha 8 / r 4
  EXPECT_EQ(q->in, 16);
  EXPECT_EQ(q->out, 16);
  EXPECT_EQ(q->a, a0);
  EXPECT_EQ(q->b, b0);

  const LoraWeights* v = lo.find(1, Module::kV);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->file_dtype, DType::kBF16);
  EXPECT_EQ(v->a, a1);  // BF16 values, converted exactly
  EXPECT_EQ(v->b, b1);  // F16
  EXPECT_EQ(v->out, 8);

  EXPECT_EQ(lo.find(0, Module::kV), nullptr);
  EXPECT_EQ(lo.find(1, Module::kQ), nullptr);
  EXPECT_EQ(lo.max_rank(), 4);
  EXPECT_EQ(lo.num_params(), 4u * (16 + 16) + 4u * (16 + 8));
  EXPECT_LT(lo.weights[0].layer, lo.weights[1].layer);
}

TEST(Adapter, RankAndAlphaPatternFirstMatchingKeyInFileOrderWins) {
  AdapterDir ad;
  ad.config()["rank_pattern"] = ordered_json{{"layers.1.self_attn.q_proj", 2}, {"q_proj", 8}};
  ad.config()["alpha_pattern"] = ordered_json{{"v_proj", 32}};
  ad.add_pair(0, Module::kQ, 8);
  ad.add_pair(1, Module::kQ, 2);
  ad.add_pair(0, Module::kV, 4);
  LoraAdapter lo = ad.load();
  EXPECT_EQ(lo.find(0, Module::kQ)->rank, 8);
  EXPECT_FLOAT_EQ(lo.find(0, Module::kQ)->scale, 1.0f);  // 8 / 8
  EXPECT_EQ(lo.find(1, Module::kQ)->rank, 2);
  EXPECT_FLOAT_EQ(lo.find(1, Module::kQ)->scale, 4.0f);  // 8 / 2
  EXPECT_EQ(lo.find(0, Module::kV)->rank, 4);
  EXPECT_FLOAT_EQ(lo.find(0, Module::kV)->scale, 8.0f);  // 32 / 4

  // The same keys in the other order: "q_proj" matches layer 1 first.
  ordered_json j = base_config();
  j["rank_pattern"] = ordered_json{{"q_proj", 8}, {"layers.1.self_attn.q_proj", 2}};
  AdapterConfig c = parse_adapter_config(j, "cfg.json");
  EXPECT_EQ(c.rank_for("model.layers.1.self_attn.q_proj"), 8);
  // Keys are regexes matched at a dot boundary: "proj" alone does not match "q_proj", ".*_proj" does.
  j["rank_pattern"] = ordered_json{{"proj", 16}};
  EXPECT_EQ(parse_adapter_config(j, "cfg.json").rank_for("model.layers.0.self_attn.q_proj"), 4);
  j["rank_pattern"] = ordered_json{{".*_proj", 16}};
  EXPECT_EQ(parse_adapter_config(j, "cfg.json").rank_for("model.layers.0.mlp.up_proj"), 16);
  j["rank_pattern"] = ordered_json{{"model.layers.0.mlp.up_proj", 16}};  // the full name matches too
  EXPECT_EQ(parse_adapter_config(j, "cfg.json").rank_for("model.layers.0.mlp.up_proj"), 16);
  EXPECT_EQ(parse_adapter_config(j, "cfg.json").rank_for("model.layers.1.mlp.up_proj"), 4);
}

TEST(Adapter, RsLoraScalesBySqrtRank) {
  AdapterDir ad;
  ad.config()["use_rslora"] = true;
  ad.config()["rank_pattern"] = ordered_json{{"v_proj", 16}};
  ad.add_pair(0, Module::kQ, 4);
  ad.add_pair(0, Module::kV, 16);
  LoraAdapter lo = ad.load();
  EXPECT_FLOAT_EQ(lo.find(0, Module::kQ)->scale, 4.0f);  // 8 / sqrt(4)
  EXPECT_FLOAT_EQ(lo.find(0, Module::kV)->scale, 2.0f);  // 8 / sqrt(16)
}

TEST(Adapter, LoraAlphaDefaultsToEightLikePeft) {
  ordered_json j = base_config();
  j.erase("lora_alpha");
  j["r"] = 16;
  AdapterConfig c = parse_adapter_config(j, "cfg.json");
  EXPECT_DOUBLE_EQ(c.scale_for("model.layers.0.self_attn.q_proj"), 0.5);
}

TEST(Adapter, TargetModulesListAndRegexFollowPeft) {
  ordered_json j = base_config();
  j["target_modules"] = {"q_proj", "mlp.up_proj"};
  AdapterConfig c = parse_adapter_config(j, "cfg.json");
  EXPECT_TRUE(c.targets("model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(c.targets("model.layers.1.mlp.up_proj"));
  EXPECT_FALSE(c.targets("model.layers.0.self_attn.k_proj"));
  j["target_modules"] = {"proj", "attn.q_proj"};  // suffixes must start at a dot
  c = parse_adapter_config(j, "cfg.json");
  EXPECT_FALSE(c.targets("model.layers.0.self_attn.q_proj"));

  j["target_modules"] = R"(.*\.layers\.1\.self_attn\.(q_proj|v_proj))";
  c = parse_adapter_config(j, "cfg.json");
  EXPECT_TRUE(c.targets("model.layers.1.self_attn.v_proj"));
  EXPECT_FALSE(c.targets("model.layers.0.self_attn.v_proj"));
  EXPECT_FALSE(c.targets("model.layers.1.self_attn.v_proj_x"));
  j["target_modules"] = "q_proj";  // a string is a regex over the full name: matches nothing here
  EXPECT_FALSE(parse_adapter_config(j, "cfg.json").targets("model.layers.0.self_attn.q_proj"));
  j["target_modules"] = "all-linear";
  EXPECT_TRUE(parse_adapter_config(j, "cfg.json").targets("model.layers.0.mlp.down_proj"));

  j["target_modules"] = {"q_proj", "v_proj"};
  j["exclude_modules"] = {"layers.0.self_attn.q_proj"};
  c = parse_adapter_config(j, "cfg.json");
  EXPECT_FALSE(c.targets("model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(c.targets("model.layers.1.self_attn.q_proj"));
  j["exclude_modules"] = R"(.*\.v_proj)";
  EXPECT_FALSE(parse_adapter_config(j, "cfg.json").targets("model.layers.1.self_attn.v_proj"));
}

TEST(Adapter, RegexTargetModulesSelectWhichTensorsMayExist) {
  AdapterDir ad;
  ad.config()["target_modules"] = R"(model\.layers\.1\..*\.(q_proj|v_proj))";
  ad.add_pair(1, Module::kQ, 4);
  ASSERT_EQ(ad.load().weights.size(), 1u);
  AdapterDir bad;
  bad.config()["target_modules"] = R"(model\.layers\.1\..*\.(q_proj|v_proj))";
  bad.add_pair(0, Module::kQ, 4);
  EXPECT_THAT(bad.error(), HasSubstr("adapts model.layers.0.self_attn.q_proj, which target_modules in"));
  EXPECT_THAT(bad.error(), HasSubstr("does not select"));
}

TEST(Adapter, LayersToTransformRestrictsTheListForm) {
  ordered_json j = base_config();
  j["layers_to_transform"] = {1};
  j["layers_pattern"] = "layers";
  AdapterConfig c = parse_adapter_config(j, "cfg.json");
  EXPECT_FALSE(c.targets("model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(c.targets("model.layers.1.self_attn.q_proj"));
  j["layers_to_transform"] = 0;
  EXPECT_TRUE(parse_adapter_config(j, "cfg.json").targets("model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(parse_adapter_config(j, "cfg.json").targets("model.layers.1.self_attn.v_proj"));
  j["layers_pattern"] = "h";
  EXPECT_THAT(config_error(j), HasSubstr("layers_pattern \"h\" in cfg.json is not supported"));

  AdapterDir ad;
  ad.config()["layers_to_transform"] = {5};
  ad.add_pair(0, Module::kQ, 4);
  EXPECT_THAT(ad.error(), HasSubstr("layers_to_transform in"));
  EXPECT_THAT(ad.error(), HasSubstr("names layer 5, but the base model has 2 layers"));
}

TEST(Adapter, ConfigRefusals) {
  struct Case {
    const char* key;
    ordered_json value;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"peft_type", "IA3", "peft_type \"IA3\" in cfg.json is not supported: only LORA adapters"},
      {"r", 0, "r in cfg.json must be an integer in [1, 65536] (found 0)"},
      {"r", -3, "r in cfg.json must be an integer"},
      {"r", "8", "r in cfg.json must be an integer"},
      {"r", 2.5, "r in cfg.json must be an integer"},
      {"lora_alpha", "x", "lora_alpha in cfg.json must be a finite number"},
      {"use_rslora", "yes", "use_rslora in cfg.json must be true or false"},
      {"use_dora", true, "use_dora: true in cfg.json: DoRA adapters are not supported"},
      {"fan_in_fan_out", true, "fan_in_fan_out: true in cfg.json"},
      {"bias", "all", "bias \"all\" in cfg.json: adapters that train biases are not supported"},
      {"bias", "lora_only", "bias \"lora_only\" in cfg.json"},
      {"modules_to_save",
       {"score"},
       "modules_to_save: [\"score\"] in cfg.json: adapters that ship fully trained"},
      {"lora_bias", true, "lora_bias: true in cfg.json"},
      {"trainable_token_indices", {1, 2}, "trainable_token_indices: [1,2] in cfg.json"},
      {"target_modules", {"q_proj", "embed_tokens"}, "names \"embed_tokens\": LoRA on embeddings or lm_head"},
      {"target_modules", {"lm_head"}, "names \"lm_head\": LoRA on embeddings or lm_head is not supported"},
      {"target_modules", ".*", "matches model.embed_tokens: LoRA on embeddings or lm_head is not supported"},
      {"target_modules", ".*(q_proj|lm_head)", "matches lm_head"},
      {"target_modules", ordered_json::array(), "target_modules in cfg.json is empty"},
      {"target_modules", 3, "target_modules in cfg.json must be a list of names or a regex string"},
      {"target_modules", "(q_proj", "invalid regular expression \"(q_proj\" in target_modules of cfg.json"},
      {"rank_pattern", {{"q_proj", 0}}, "rank_pattern key \"q_proj\" in cfg.json must be an integer"},
      {"rank_pattern", {{"q_(", 8}}, "invalid regular expression"},
      {"rank_pattern", {1, 2}, "rank_pattern in cfg.json must be an object"},
      {"alpha_pattern",
       {{"q_proj", "big"}},
       "alpha_pattern key \"q_proj\" in cfg.json must be a finite number"},
      {"layers_to_transform", {-1}, "layers_to_transform in cfg.json must be an integer"},
  };
  for (const auto& c : cases) {
    ordered_json j = base_config();
    j[c.key] = c.value;
    EXPECT_THAT(config_error(j), HasSubstr(c.message)) << c.key << " = " << c.value.dump();
  }
  ordered_json j = base_config();
  j.erase("peft_type");
  EXPECT_THAT(config_error(j), HasSubstr("cfg.json has no peft_type"));
  j = base_config();
  j.erase("target_modules");
  EXPECT_THAT(config_error(j), HasSubstr("cfg.json has no target_modules"));
  EXPECT_THAT(config_error(ordered_json::array()), HasSubstr("cfg.json must be a JSON object"));
  // Explicitly neutral values are accepted.
  j = base_config();
  j["modules_to_save"] = ordered_json::array();
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["lora_bias"] = false;
  EXPECT_EQ(config_error(j), "");
}

TEST(Adapter, FolderRefusals) {
  {
    test::TempDir dir("lora");
    test::write_file(dir / "adapter_config.json", base_config().dump());
    test::write_file(dir / "adapter_model.bin", "PK\x03\x04");
    try {
      load_adapter(dir.path(), small_base());
      ADD_FAILURE() << "pickle folder accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(),
                  HasSubstr("has adapter_model.bin but no adapter_model.safetensors: pickle files are "
                            "never parsed (loading one can execute arbitrary code)"));
      EXPECT_THAT(e.what(), HasSubstr("convert the adapter to safetensors"));
    }
  }
  {
    test::TempDir dir("lora");
    test::write_file(dir / "adapter_config.json", base_config().dump());
    EXPECT_THROW(
        {
          try {
            load_adapter(dir.path(), small_base());
          } catch (const Error& e) {
            EXPECT_THAT(e.what(), HasSubstr("no adapter_model.safetensors in"));
            throw;
          }
        },
        Error);
  }
  {
    AdapterDir ad;
    ad.add_pair(0, Module::kQ, 4);
    ad.write();
    std::filesystem::remove(ad.path() / "adapter_config.json");
    try {
      load_adapter(ad.path(), small_base());
      ADD_FAILURE() << "folder without config accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("no adapter_config.json in"));
    }
    test::write_file(ad.path() / "adapter_config.json", R"({"peft_type":"LORA","r":4,"r":8})");
    try {
      load_adapter(ad.path(), small_base());
      ADD_FAILURE() << "duplicate key accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("duplicate key \"r\""));
    }
  }
}

// One bad tensor set per case; the message must name what is wrong.
TEST(Adapter, TensorRefusals) {
  const std::string q0A = tname(0, Module::kQ, 'A'), q0B = tname(0, Module::kQ, 'B');
  struct Case {
    const char* what;
    std::function<void(AdapterDir&)> build;
    std::vector<std::string> messages;
  };
  const std::vector<Case> cases = {
      {"A in_features wrong",
       [&](AdapterDir& d) {
         d.add(q0A, {4, 12}, 1), d.add(q0B, {16, 4}, 2);
       },
       {q0A,
        "has shape [4, 12], expected [4, 16] ([r, in_features] of model.layers.0.self_attn.q_proj: "
        "in_features is 16)"}},
      {"B out_features wrong",
       [&](AdapterDir& d) {
         d.add(tname(0, Module::kV, 'A'), {4, 16}, 1), d.add(tname(0, Module::kV, 'B'), {16, 4}, 2);
       },
       {"lora_B.weight",
        "has shape [16, 4], expected [8, 4] ([out_features, r] of model.layers.0.self_attn.v_proj"}},
      {"A is 1-D",
       [&](AdapterDir& d) {
         d.add(q0A, {64}, 1), d.add(q0B, {16, 4}, 2);
       },
       {q0A, "has shape [64], expected [4, 16]"}},
      {"rank differs from r",
       [&](AdapterDir& d) {
         d.add(q0A, {2, 16}, 1), d.add(q0B, {16, 2}, 2);
       },
       {q0A,
        "has rank 2 (shape [2, 16]), but the config gives r = 4 for model.layers.0.self_attn.q_proj (from "
        "r)"}},
      {"rank differs from rank_pattern",
       [&](AdapterDir& d) {
         d.config()["rank_pattern"] = ordered_json{{"q_proj", 8}};
         d.add(q0A, {4, 16}, 1), d.add(q0B, {16, 4}, 2);
       },
       {"has rank 4", "gives r = 8", "(from rank_pattern); expected [8, 16]"}},
      {"A without B",
       [&](AdapterDir& d) {
         d.add(q0A, {4, 16}, 1);
       },
       {q0A, "has no matching lora_B (expected shape [16, 4] for model.layers.0.self_attn.q_proj)"}},
      {"B without A",
       [&](AdapterDir& d) {
         d.add(q0B, {16, 4}, 1);
       },
       {q0B, "has no matching lora_A (expected shape [4, 16]"}},
      {"layer past the base",
       [&](AdapterDir& d) {
         d.add_pair(0, Module::kQ, 4), d.add(tname(2, Module::kQ, 'A'), {4, 16}, 1);
       },
       {"layers.2.self_attn.q_proj.lora_A.weight", "is for layer 2, but the base model has 2 layers"}},
      {"q_norm",
       [&](AdapterDir& d) {
         d.add("base_model.model.model.layers.0.self_attn.q_norm.lora_A.weight", {4, 16}, 1);
       },
       {"q_norm.lora_A.weight", "adapts module self_attn.q_norm, which the base model does not have"}},
      {"q_proj under mlp",
       [&](AdapterDir& d) {
         d.add("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight", {4, 16}, 1);
       },
       {"adapts module mlp.q_proj, which the base model does not have"}},
      {"not a layer module",
       [&](AdapterDir& d) {
         d.add("base_model.model.model.norm.lora_A.weight", {4, 16}, 1);
       },
       {"adapts \"model.norm\", which is not a projection of a decoder layer"}},
      {"embed_tokens",
       [&](AdapterDir& d) {
         d.add("base_model.model.model.embed_tokens.lora_embedding_A", {4, 32}, 1);
       },
       {"embed_tokens.lora_embedding_A", "LoRA on embeddings or lm_head is not supported"}},
      {"lm_head",
       [&](AdapterDir& d) {
         d.add("base_model.model.lm_head.lora_A.weight", {4, 16}, 1);
       },
       {"base_model.model.lm_head.lora_A.weight", "adapts an embedding or lm_head"}},
      {"DoRA magnitude",
       [&](AdapterDir& d) {
         d.add_pair(0, Module::kQ, 4);
         d.add("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", {16}, 1);
       },
       {"q_proj.lora_magnitude_vector", "is a DoRA magnitude vector"}},
      {"base bias",
       [&](AdapterDir& d) { d.add("base_model.model.model.layers.0.self_attn.q_proj.bias", {16}, 1); },
       {"q_proj.bias", "is a bias: adapters that train biases are not supported"}},
      {"lora bias",
       [&](AdapterDir& d) {
         d.add_pair(0, Module::kQ, 4),
             d.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", {16}, 1);
       },
       {"lora_B.bias", "is a LoRA bias"}},
      {"no PEFT prefix",
       [&](AdapterDir& d) {
         d.add("model.layers.0.self_attn.q_proj.lora_A.weight", {4, 16}, 1);
       },
       {"unexpected tensor model.layers.0.self_attn.q_proj.lora_A.weight"}},
      {"other adapter name",
       [&](AdapterDir& d) {
         d.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.other.weight", {4, 16}, 1);
       },
       {"lora_A.other.weight", "expected lora_A.weight or lora_A.default.weight"}},
      {"same half twice",
       [&](AdapterDir& d) {
         d.add_pair(0, Module::kQ, 4);
         d.add(tname(0, Module::kQ, 'A', true), {4, 16}, 9);
       },
       {"are the same LoRA half of one module"}},
      {"module not targeted",
       [&](AdapterDir& d) { d.add_pair(0, Module::kK, 4); },
       {"adapts model.layers.0.self_attn.k_proj, which target_modules in", "does not select"}},
      {"empty B",
       [&](AdapterDir& d) {
         d.add_pair(0, Module::kQ, 4);
         d.add_pair(1, Module::kQ, 4);
         d.add_pair(0, Module::kV, 4);
         d.add("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", {4, 16}, 1);
         d.add("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", {0, 4}, 1);
       },
       {"v_proj.lora_B.weight", "has shape [0, 4], expected [8, 4]"}},
      {"empty file", [&](AdapterDir&) {}, {"contains no LoRA tensors"}},
  };
  for (const auto& c : cases) {
    AdapterDir d;
    c.build(d);
    std::string msg = d.error();
    for (const auto& m : c.messages) EXPECT_THAT(msg, HasSubstr(m)) << c.what;
  }
}

TEST(Adapter, NonFiniteWeightsAreRefused) {
  AdapterDir d;
  d.add_pair(0, Module::kQ, 4);
  std::vector<float> bad(4 * 16, 0.25f);
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  const std::filesystem::path dir = d.write();
  // Rewrite the file with a NaN in A.
  std::vector<float> b(16 * 4, 0.5f);
  io::SafetensorsWriter w;
  w.add(tname(0, Module::kQ, 'A'), DType::kF32, {4, 16}, bad.data());
  w.add(tname(0, Module::kQ, 'B'), DType::kF32, {16, 4}, b.data());
  w.write(dir / "adapter_model.safetensors");
  try {
    load_adapter(dir, small_base());
    ADD_FAILURE() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("q_proj.lora_A.weight"));
    EXPECT_THAT(e.what(), HasSubstr("has a non-finite value (nan) at index 5"));
  }
}

}  // namespace
}  // namespace lp::lora
