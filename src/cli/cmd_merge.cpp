// `loraplex merge --model DIR --adapter DIR [--adapter DIR ...] [--scale S ...] --out DIR`: a complete HF model
// folder with W + sum of scale·s·B·A merged (one adapter, or a stack with per-adapter multipliers).
// A quantized base is refused (lora/merge.h says why): --quantization int8 here, or an AWQ / GPTQ checkpoint.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/check.h"
#include "core/clock.h"
#include "lora/merge.h"

namespace lp::cli {

void add_merge_command(CLI::App& app) {
  struct Args {
    std::string model, out;
    std::vector<std::string> adapters;
    std::vector<double> scales;
    std::string quantization = "none";
  };
  auto args = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("merge", "Merge a LoRA adapter into the base weights (W + s·B·A)");
  c->add_option("--model", args->model, "Base model folder")->required();
  c->add_option("--adapter", args->adapters, "PEFT adapter folder (repeat to merge a stack)")->required();
  c->add_option("--scale", args->scales,
                "Multiplier of each --adapter's alpha/r scale, in the same order (default 1 each)");
  c->add_option("--out", args->out, "Output model folder")->required();
  c->add_option(
      "--quantization,-q", args->quantization,
      "none only: merging into a quantized base is refused (serve the adapter on top of it instead)");
  c->callback([args] {
    check_quantization_flag(args->quantization);
    if (args->quantization != "none")
      fail(
          "merge --quantization {} is refused: merging into quantized weights would requantize them and "
          "round much of the adapter's update away. Serve the adapter on the quantized base instead (serve "
          "--quantization {} --lora-modules ...): it stays exact on top",
          args->quantization, args->quantization);
    double t0 = now_seconds();
    if (!args->scales.empty() && args->scales.size() != args->adapters.size())
      fail("merge: {} --scale values for {} --adapter folders (give one per adapter, or none)",
           args->scales.size(), args->adapters.size());
    std::vector<lora::MergeTerm> terms;
    std::string names;
    for (size_t i = 0; i < args->adapters.size(); ++i) {
      terms.push_back({args->adapters[i], args->scales.empty() ? 1.0 : args->scales[i]});
      names += (i ? " + " : "") + args->adapters[i];
    }
    lora::merge_adapters(args->model, terms, args->out);
    std::printf("merged %s into %s -> %s in %.2f s\n", names.c_str(), args->model.c_str(), args->out.c_str(),
                now_seconds() - t0);
  });
}

}  // namespace lp::cli
