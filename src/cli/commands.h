// Each `loraplex` subcommand lives in its own cmd_*.cpp and registers itself on the CLI11 app through one
// of these functions (called from main.cpp). A command's callback throws lp::Error for bad input; main
// prints it and exits 1.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "core/check.h"
#include "core/dtype.h"

namespace lp::cli {

// Checks a dtype option (bf16 | f16 | f32 | auto, as parse_dtype_flag reads it) while the command line is
// parsed, so a bad value fails before anything is loaded; "auto" is resolved later against the model.
inline CLI::Validator dtype_flag_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        try {
          parse_dtype_flag(v, DType::kF32, "value");
          return {};
        } catch (const Error&) {
          return "'" + v + "' is not one of bf16, f16, f32, auto";
        }
      },
      "bf16|f16|f32|auto");
}

void add_demo_model_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_bench_serve_command(CLI::App& app);  // after add_bench_command: adds `bench serve`
void add_serve_command(CLI::App& app);
void add_merge_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_tokenize_commands(CLI::App& app);
void add_chat_template_command(CLI::App& app);

}  // namespace lp::cli
