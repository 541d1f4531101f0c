// `loraplex demo-model OUT --shape tiny|small|smol|1b|8b --seed S`: a synthetic model in Hugging Face layout,
// with a real byte-level BPE tokenizer whose vocabulary matches vocab_size. `--shape story` writes the
// constructed story model instead (model/demo_story.h): readable text, and adapters that visibly steer it.
#include <filesystem>

#include "cli/commands.h"
#include "core/check.h"
#include "core/clock.h"
#include "lora/demo_adapter.h"
#include "model/demo_model.h"
#include "model/demo_story.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"

namespace lp::cli {

namespace {

struct DemoArgs {
  std::string out;
  std::string shape = "tiny";
  uint64_t seed = 1;
  std::string dtype = "bf16";
  std::string arch = "llama";
  int adapters = 0;
  int rank = 16;
  bool mixed = false;
  std::string quantization = "none";
  bool gptq_sym = true;
};

DType parse_dtype(const std::string& s) {
  if (s == "bf16") return DType::kBF16;
  if (s == "f16") return DType::kF16;
  if (s == "f32") return DType::kF32;
  fail("unknown --dtype '{}' (bf16, f16, f32)", s);
}

// The demo tokenizer's BOS and EOS ids into the spec; returns <|im_end|>'s id.
int32_t set_special_ids(const text::Tokenizer& tok, model::DemoSpec& spec) {
  auto bos = tok.token_to_id("<|begin_of_text|>");
  auto eot = tok.token_to_id("<|end_of_text|>");
  auto im_end = tok.token_to_id("<|im_end|>");
  LP_CHECK(bos && eot && im_end, "demo tokenizer lacks its special tokens");
  spec.bos_ids = {*bos};
  spec.eos_ids = {*eot, *im_end};
  return *im_end;
}

// The story model: its tokenizer first (the passages' segments as added tokens), then weights built for the
// ids that tokenizer gives them, then its rank-1 adapters.
void run_story(const DemoArgs& a, model::DemoSpec spec, const std::filesystem::path& dir, double t0) {
  if (a.arch != "llama" || a.quantization != "none" || a.mixed)
    fail("--shape story is a plain llama model: --arch, --quantization and --mixed do not apply");
  const std::vector<std::string> segments = model::story_tokens();
  text::write_demo_tokenizer(dir, model::demo_vocab_size("story"), a.seed, segments);
  text::Tokenizer tok = text::Tokenizer::from_dir(dir);
  const int32_t im_end = set_special_ids(tok, spec);
  model::StoryIds ids;
  ids.eos = im_end;  // ends a chat turn and a completion alike
  for (const std::string& s : segments) {
    auto id = tok.token_to_id(s);
    LP_CHECK(id && tok.decode(std::vector<int32_t>{*id}) == s, "story token '{}' does not round-trip", s);
    ids.tokens.push_back(*id);
  }
  model::write_story_model(dir, spec, ids);
  if (a.adapters > 0) {
    const model::ModelConfig cfg = model::ModelConfig::from_dir(dir);
    auto names = lora::write_story_adapters(dir / "adapters", cfg, a.adapters,
                                            spec.dtype == DType::kF32 ? DType::kF32 : DType::kBF16);
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    std::printf("wrote %d story adapters (rank 1: %s) to %s\n", a.adapters, list.c_str(),
                (dir / "adapters").c_str());
  }
  std::printf("wrote story model (%s, %zu words and phrases) to %s in %.1f s\n", a.dtype.c_str(),
              segments.size(), dir.c_str(), now_seconds() - t0);
}

void run_demo_model(const DemoArgs& a) {
  double t0 = now_seconds();
  std::filesystem::path dir(a.out);
  std::filesystem::create_directories(dir);
  model::DemoSpec spec;
  spec.shape = a.shape;
  spec.seed = a.seed;
  spec.dtype = parse_dtype(a.dtype);
  spec.arch = a.arch;
  if (a.quantization != "none") spec.quantization = a.quantization;
  spec.gptq_sym = a.gptq_sym;
  if (a.shape == "story") return run_story(a, spec, dir, t0);
  int vocab = model::demo_vocab_size(a.shape);
  text::write_demo_tokenizer(dir, vocab, a.seed);
  text::Tokenizer tok = text::Tokenizer::from_dir(dir);
  LP_CHECK(tok.vocab_size() == vocab, "demo tokenizer has {} tokens, model wants {}", tok.vocab_size(), vocab);
  set_special_ids(tok, spec);
  model::write_demo_model(dir, spec);
  if (a.adapters > 0) {
    if (a.rank < 1) fail("--rank must be at least 1");
    model::ModelConfig cfg = model::ModelConfig::from_dir(dir);
    auto names = lora::demo_adapter_names(a.adapters);
    for (int i = 0; i < a.adapters; ++i) {
      lora::DemoAdapterSpec s = lora::demo_adapter_spec(i, a.rank, a.mixed, a.seed, spec.dtype == DType::kF32 ? DType::kF32 : DType::kBF16);
      s.base_model = "loraplex-demo-" + a.shape;
      lora::write_demo_adapter(dir / "adapters" / names[i], cfg, s);
    }
    std::printf("wrote %d adapters (rank %d%s) to %s\n", a.adapters, a.rank, a.mixed ? ", mixed" : "",
                (dir / "adapters").c_str());
  }
  const std::string weights = spec.quantization.empty() ? a.dtype : spec.quantization + " int4, f16";
  std::printf("wrote %s model (%s, %s, seed %llu) to %s in %.1f s\n", a.shape.c_str(), a.arch.c_str(),
              weights.c_str(), static_cast<unsigned long long>(a.seed), dir.c_str(), now_seconds() - t0);
}

}  // namespace

void add_demo_model_command(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  CLI::App* c = app.add_subcommand("demo-model", "Write a deterministic synthetic model (HF layout)");
  c->add_option("out", args->out, "Output folder")->required();
  c->add_option(
       "--shape", args->shape,
       "tiny | small | smol (SmolLM2-135M) | 1b (Llama-3.2-1B) | 8b (Llama-3.1-8B, 16 GB in bf16) | story "
       "(readable text; its adapters, at most 4, are rank 1 and each steers it to its own passage)")
      ->check(CLI::IsMember({"tiny", "small", "smol", "1b", "8b", "story"}));
  c->add_option("--seed", args->seed, "Random seed");
  c->add_option("--dtype", args->dtype, "Weight dtype: bf16 | f16 | f32")->check(CLI::IsMember({"bf16", "f16", "f32"}));
  c->add_option("--arch", args->arch, "llama | mistral | qwen2")->check(CLI::IsMember({"llama", "mistral", "qwen2"}));
  c->add_option("--adapters", args->adapters, "Also write N PEFT adapters under OUT/adapters/");
  c->add_option("--rank", args->rank, "Adapter rank (the story adapters are rank 1 whatever it says)");
  c->add_option(
       "--quantization", args->quantization,
       "none | awq | gptq: write the projections as an int4 AWQ (GEMM) or GPTQ checkpoint, the rest F16")
      ->check(CLI::IsMember({"none", "awq", "gptq"}));
  c->add_option("--gptq-sym", args->gptq_sym, "gptq: symmetric (true, zero 8) or asymmetric (false)");
  c->add_flag("--mixed", args->mixed, "Vary ranks, target modules, rsLoRA and rank patterns across adapters");
  c->callback([args] { run_demo_model(*args); });
}

}  // namespace lp::cli
