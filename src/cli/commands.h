// Each `loraplex` subcommand lives in its own cmd_*.cpp and registers itself on the CLI11 app through one
// of these functions (called from main.cpp). A command's callback throws lp::Error for bad input; main
// prints it and exits 1.
#pragma once

#include <CLI/CLI.hpp>

namespace lp::cli {

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
