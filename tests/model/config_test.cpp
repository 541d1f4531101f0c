// config.json parsing and weight validation errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/demo_model.h"
#include "model/weights.h"
#include "util/test_util.h"

namespace lp::model {
namespace {

using nlohmann::json;

json base_config() {
  DemoSpec spec;
  return json::parse(demo_config_json(spec));
}

std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j, "cfg");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, ParsesDemoShapes) {
  for (const char* shape : {"tiny", "small", "smol", "1b", "8b"}) {
    DemoSpec s;
    s.shape = shape;
    ModelConfig c = ModelConfig::from_json(json::parse(demo_config_json(s)), shape);
    EXPECT_EQ(c.vocab_size, demo_vocab_size(shape));
  }
  DemoSpec s;
  s.shape = "1b";
  ModelConfig c = ModelConfig::from_json(json::parse(demo_config_json(s)), "1b");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.rope_scaling.llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
}

// The GPU benchmarks' 8b shape is Llama-3.1-8B's (its config.json's values, written out here).
TEST(ModelConfig, Demo8bHasLlama31Dimensions) {
  DemoSpec s;
  s.shape = "8b";
  ModelConfig c = ModelConfig::from_json(json::parse(demo_config_json(s)), "8b");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.n_layers, 32);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, DType::kBF16);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.rope_scaling.llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
}

TEST(ModelConfig, UnsupportedArchitectureListsSupportedOnes) {
  json j = base_config();
  j["architectures"] = {"GPTNeoXForCausalLM"};
  std::string e = error_of(j);
  EXPECT_NE(e.find("unsupported architecture 'GPTNeoXForCausalLM'"), std::string::npos) << e;
  EXPECT_NE(e.find("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"), std::string::npos) << e;
}

TEST(ModelConfig, SpecificErrors) {
  json j = base_config();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("missing required field 'hidden_size'"), std::string::npos);
  j = base_config();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("not a multiple of num_key_value_heads 3"), std::string::npos);
  j = base_config();
  j["hidden_size"] = "64";
  EXPECT_NE(error_of(j).find("hidden_size in cfg must be an integer"), std::string::npos);
  j = base_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(error_of(j).find("unsupported rope_scaling type 'yarn'"), std::string::npos);
  j = base_config();
  j["torch_dtype"] = "int8";
  EXPECT_NE(error_of(j).find("unsupported torch_dtype"), std::string::npos);
  EXPECT_EQ(error_of(base_config()), "");
}

TEST(ModelConfig, DuplicateKeyIsRefused) {
  test::TempDir dir("cfg");
  std::string text = base_config().dump(2);
  text.insert(text.rfind('}'), ",\n  \"hidden_size\": 128\n");  // a second hidden_size, after the first
  test::write_file(dir / "config.json", text);
  try {
    ModelConfig::from_dir(dir.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "duplicate key \"hidden_size\" in " + (dir / "config.json").string());
  }
}

// A size outside its range is refused, never narrowed to int (4294967360 would wrap to 64).
TEST(ModelConfig, OutOfRangeSizeIsRefused) {
  json j = base_config();
  j["hidden_size"] = 4294967360LL;
  EXPECT_EQ(error_of(j), "hidden_size in cfg must be an integer in [1, 1048576] (found 4294967360)");
  j = base_config();
  j["num_attention_heads"] = 0;
  EXPECT_EQ(error_of(j), "num_attention_heads in cfg must be an integer in [1, 4096] (found 0)");
  j = base_config();
  j["bos_token_id"] = 4294967297LL;
  EXPECT_EQ(error_of(j),
            "bos_token_id in cfg must be an integer in [-2147483648, 2147483647] (found 4294967297)");
}

// Wrong types are lp::Errors naming the field and the value (not nlohmann::type_error).
TEST(ModelConfig, WrongTypeIsAnError) {
  json j = base_config();
  j["tie_word_embeddings"] = "yes";
  EXPECT_EQ(error_of(j), "tie_word_embeddings in cfg must be true or false (found \"yes\")");
  j = base_config();
  j["attention_bias"] = 1;
  EXPECT_EQ(error_of(j), "attention_bias in cfg must be true or false (found 1)");
  j = base_config();
  j["use_sliding_window"] = "no";
  EXPECT_EQ(error_of(j), "use_sliding_window in cfg must be true or false (found \"no\")");
  j = base_config();
  j["rope_scaling"] = {{"rope_type", 3}};
  EXPECT_EQ(error_of(j), "rope_scaling.rope_type in cfg must be a string (found 3)");
  j = base_config();
  j["rms_norm_eps"] = "1e-5";
  EXPECT_EQ(error_of(j), "rms_norm_eps in cfg must be a finite number (found \"1e-5\")");
  j = base_config();
  j["tie_word_embeddings"] = nullptr;  // null reads as absent
  EXPECT_EQ(error_of(j), "");
}

TEST(ModelConfig, HeadDimAndSlidingWindow) {
  json j = base_config();
  j["head_dim"] = 32;  // explicit head_dim != hidden / heads
  ModelConfig c = ModelConfig::from_json(j, "cfg");
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.q_dim(), 128);
  j = base_config();
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 256;
  EXPECT_EQ(ModelConfig::from_json(j, "cfg").max_model_len, 256);
}

TEST(ModelWeights, WrongShapeNamesTensorAndShapes) {
  test::TempDir dir("weights");
  DemoSpec spec;
  spec.dtype = DType::kF32;
  write_demo_model(dir.path(), spec);
  // Rewrite the file with one tensor of the wrong shape.
  {
    auto set = io::TensorSet::open_dir(dir.path());
    io::SafetensorsWriter w;
    std::vector<float> bad(64 * 60, 0.5f);
    for (const auto* t : set.all()) {
      if (t->name == "model.layers.1.mlp.up_proj.weight") continue;
      w.add(t->name, t->dtype, t->shape, t->data);
    }
    w.add("model.layers.1.mlp.up_proj.weight", DType::kF32, {60, 64}, bad.data());
    w.write(dir / "tmp.safetensors");
  }
  std::filesystem::rename(dir / "tmp.safetensors", dir / "model.safetensors");
  ModelConfig c = ModelConfig::from_dir(dir.path());
  try {
    ModelWeights::load(dir.path(), c);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "tensor 'model.layers.1.mlp.up_proj.weight' has shape [60, 64], expected [176, 64]");
  }
}

TEST(ModelWeights, MissingTensorIsNamed) {
  test::TempDir dir("weights");
  DemoSpec spec;
  write_demo_model(dir.path(), spec);
  json j = json::parse(test::read_file(dir / "config.json"));
  j["num_hidden_layers"] = 3;  // the file has 2 layers
  test::write_file(dir / "config.json", j.dump());
  ModelConfig c = ModelConfig::from_dir(dir.path());
  try {
    ModelWeights::load(dir.path(), c);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'model.layers.2.self_attn.q_proj.weight'"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace lp::model
