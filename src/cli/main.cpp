// loraplex: one base LLM, many LoRA adapters. Entry point; subcommands are in cmd_*.cpp.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/check.h"
#include "core/version.h"

int main(int argc, char** argv) {
  CLI::App app{"loraplex: serve one base LLM with many LoRA adapters"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "loraplex " + std::string(lp::version()));
  lp::cli::add_demo_model_command(app);
  lp::cli::add_logits_command(app);
  lp::cli::add_generate_command(app);
  lp::cli::add_bench_command(app);
  lp::cli::add_bench_serve_command(app);
  lp::cli::add_serve_command(app);
  lp::cli::add_merge_command(app);
  lp::cli::add_plan_command(app);
  lp::cli::add_tokenize_commands(app);
  lp::cli::add_chat_template_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const lp::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
