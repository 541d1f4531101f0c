#include "lora/demo_adapter.h"

#include <cmath>
#include <fstream>

#include "core/buffer.h"
#include "core/check.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "lora/adapter_config.h"
#include "model/demo_model.h"
#include "model/demo_story.h"
#include "model/weights.h"

namespace lp::lora {

std::vector<std::string> demo_adapter_names(int n) {
  static const char* base[] = {"medical-qa",     "legal-summary", "code-review",  "french-support",
                               "finance-report", "retail-chat",   "travel-agent", "hr-policy",
                               "insurance-claims", "edu-tutor",   "game-npc",     "devops-helper"};
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string name = base[i % 12];
    if (i >= 12) name += "-" + std::to_string(i / 12 + 1);
    out.push_back(name);
  }
  return out;
}

DemoAdapterSpec demo_adapter_spec(int i, int rank, bool mixed, uint64_t seed, DType dtype) {
  DemoAdapterSpec s;
  s.seed = seed * 1000 + static_cast<uint64_t>(i);
  s.dtype = dtype;
  s.rank = rank;
  s.alpha = 2.0 * rank;
  if (!mixed) return s;
  switch (i % 4) {
    case 0:  // all seven projections at full rank
      break;
    case 1:  // attention only, half rank, rsLoRA
      s.rank = std::max(1, rank / 2);
      s.alpha = 2.0 * s.rank;
      s.targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
      s.use_rslora = true;
      break;
    case 2:  // q/v only, quarter rank, with a rank pattern raising v_proj
      s.rank = std::max(1, rank / 4);
      s.alpha = 4.0 * s.rank;
      s.targets = {"q_proj", "v_proj"};
      s.rank_pattern = {{"v_proj", rank}};
      s.alpha_pattern = {{"v_proj", rank}};
      break;
    case 3:  // MLP only
      s.targets = {"gate_proj", "up_proj", "down_proj"};
      s.adapter_name_infix = true;
      break;
  }
  return s;
}

void write_demo_adapter(const std::filesystem::path& dir, const model::ModelConfig& base, const DemoAdapterSpec& s) {
  std::filesystem::create_directories(dir);
  nlohmann::ordered_json cfg = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", s.base_model},
      {"r", s.rank},
      {"lora_alpha", s.alpha},
      {"lora_dropout", 0.0},
      {"target_modules", s.targets},
      {"use_rslora", s.use_rslora},
      {"use_dora", false},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"modules_to_save", nullptr},
      {"rank_pattern", s.rank_pattern},
      {"alpha_pattern", s.alpha_pattern},
      {"inference_mode", true},
  };
  {
    std::ofstream f(dir / "adapter_config.json");
    if (!f) fail("cannot write {}", (dir / "adapter_config.json").string());
    f << cfg.dump(2) << "\n";
  }
  // Parse it back: the same rules decide each module's rank as when loading.
  AdapterConfig ac = parse_adapter_config(cfg, (dir / "adapter_config.json").string());
  io::SafetensorsWriter w;
  std::vector<Buffer<uint8_t>> store;
  const size_t es = dtype_size(s.dtype);
  auto add = [&](const std::string& name, int64_t rows, int64_t cols, float scale,
                 const std::vector<float>* given) {
    Buffer<uint8_t> buf(static_cast<size_t>(rows * cols) * es);
    model::DemoRng rng(s.seed, name);
    std::vector<float> tmp(static_cast<size_t>(rows * cols));
    if (given) {
      LP_CHECK(given->size() == tmp.size(), "{}: {} values given for ({}, {})", name, given->size(), rows,
               cols);
      tmp = *given;
    } else {
      for (auto& v : tmp) v = scale * rng.uniform();
    }
    from_f32(s.dtype, tmp.data(), buf.data(), tmp.size());
    w.add(name, s.dtype, {rows, cols}, buf.data());
    store.push_back(std::move(buf));
  };
  const std::string infix = s.adapter_name_infix ? ".default" : "";
  for (int l = 0; l < base.n_layers; ++l) {
    for (int i = 0; i < kNumModules; ++i) {
      Module m = static_cast<Module>(i);
      std::string path = module_path(l, m);
      if (!ac.targets(path)) continue;
      int r = ac.rank_for(path);
      auto [in, out] = model::proj_shape(base, static_cast<model::Proj>(i));
      std::string pre = "base_model.model." + path;
      auto given = s.fixed.find(path);
      LP_CHECK(s.fixed.empty() || given != s.fixed.end(), "no values given for {}", path);
      const bool fixed = given != s.fixed.end();
      add(pre + ".lora_A" + infix + ".weight", r, in, std::sqrt(3.0f / static_cast<float>(in)),
          fixed ? &given->second.first : nullptr);
      add(pre + ".lora_B" + infix + ".weight", out, r, 0.05f, fixed ? &given->second.second : nullptr);
    }
  }
  w.set_metadata("format", "pt");
  w.write(dir / "adapter_model.safetensors");
}

std::vector<std::string> write_story_adapters(const std::filesystem::path& dir,
                                              const model::ModelConfig& base, int n, DType dtype) {
  const auto& passages = model::story_passages();
  if (n < 0 || n >= static_cast<int>(passages.size()))
    fail("the story model has {} adapters (asked for {})", passages.size() - 1, n);
  std::vector<std::string> names;
  for (int i = 1; i <= n; ++i) {
    const model::StoryLora l = model::story_lora(base, static_cast<size_t>(i));
    DemoAdapterSpec s;
    s.rank = 1;
    s.alpha = 1;  // scale alpha / r = 1: B holds the exact amount
    const std::string path = module_path(l.layer, l.proj);
    s.targets = {path};
    s.fixed[path] = {l.a, l.b};
    s.dtype = dtype;
    s.base_model = "loraplex-demo-story";
    write_demo_adapter(dir / passages[i].adapter, base, s);
    names.push_back(passages[i].adapter);
  }
  return names;
}

}  // namespace lp::lora
