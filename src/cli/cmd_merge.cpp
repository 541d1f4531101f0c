// `loraplex merge --model DIR --adapter DIR --out DIR`: a complete HF model folder with W + s·B·A merged.
#include <cstdio>

#include "cli/commands.h"
#include "core/clock.h"
#include "lora/merge.h"

namespace lp::cli {

void add_merge_command(CLI::App& app) {
  struct Args {
    std::string model, adapter, out;
  };
  auto args = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("merge", "Merge a LoRA adapter into the base weights (W + s·B·A)");
  c->add_option("--model", args->model, "Base model folder")->required();
  c->add_option("--adapter", args->adapter, "PEFT adapter folder")->required();
  c->add_option("--out", args->out, "Output model folder")->required();
  c->callback([args] {
    double t0 = now_seconds();
    lora::merge_adapter(args->model, args->adapter, args->out);
    std::printf("merged %s into %s -> %s in %.2f s\n", args->adapter.c_str(), args->model.c_str(),
                args->out.c_str(), now_seconds() - t0);
  });
}

}  // namespace lp::cli
