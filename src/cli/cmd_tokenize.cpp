// `loraplex tokenize` and `loraplex detokenize`: the tokenizer.json encode / decode the server uses, from
// the command line (for checking a model folder's tokenizer, and for scripts that need ids).
//   loraplex tokenize --tokenizer DIR (--text S | --file F) [--jsonl] [--no-special]
//     prints the ids as a JSON array; with --jsonl, F holds one JSON string per line and each output line
//     is that string's id array.
//   loraplex detokenize --tokenizer DIR --ids 1,2,3 [--skip-special] [--json]
//     prints the text (as a JSON string with --json).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/check.h"
#include "text/tokenizer.h"

namespace lp::cli {

namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string text;
  std::string file;
  bool has_text = false;  // --text given (it may be the empty string)
  bool has_file = false;
  bool jsonl = false;
  bool no_special = false;
};

struct DetokenizeArgs {
  std::string tokenizer;
  std::string ids;
  bool skip_special = false;
  bool json = false;
};

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot read {}", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void print_ids(const std::vector<int32_t>& ids) {
  const std::string line = fmt::format("[{}]\n", fmt::join(ids, ","));
  std::fwrite(line.data(), 1, line.size(), stdout);
}

void run_tokenize(const TokenizeArgs& a) {
  if (a.has_text == a.has_file) fail("give exactly one of --text or --file");
  if (a.jsonl && !a.has_file) fail("--jsonl needs --file");
  const text::Tokenizer tok = text::Tokenizer::from_dir(a.tokenizer);
  const bool add_special = !a.no_special;
  if (a.jsonl) {
    std::istringstream in(read_all(a.file));
    size_t line_no = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_no;
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        fail("{}:{}: invalid JSON: {}", a.file, line_no, e.what());
      }
      if (!j.is_string()) fail("{}:{}: expected a JSON string", a.file, line_no);
      print_ids(tok.encode(j.get_ref<const std::string&>(), add_special));
    }
    return;
  }
  print_ids(tok.encode(a.has_file ? read_all(a.file) : a.text, add_special));
}

void run_detokenize(const DetokenizeArgs& a) {
  const text::Tokenizer tok = text::Tokenizer::from_dir(a.tokenizer);
  const std::vector<int32_t> ids = parse_ids(a.ids);
  for (int32_t id : ids)
    if (id >= tok.vocab_size()) fail("token id {} is out of range (vocab size {})", id, tok.vocab_size());
  const std::string text = tok.decode(ids, a.skip_special);
  const std::string out = a.json ? nlohmann::json(text).dump() + "\n" : text + "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void add_tokenize_commands(CLI::App& app) {
  auto targs = std::make_shared<TokenizeArgs>();
  CLI::App* t =
      app.add_subcommand("tokenize", "Encode text with a model's tokenizer.json; prints ids as JSON");
  t->add_option("--tokenizer", targs->tokenizer, "Folder with tokenizer.json (and tokenizer_config.json)")
      ->required();
  auto* text_opt = t->add_option("--text", targs->text, "Text to encode");
  auto* file_opt = t->add_option("--file", targs->file, "File whose contents to encode");
  text_opt->excludes(file_opt);
  t->add_flag("--jsonl", targs->jsonl, "--file holds one JSON string per line; print one id array per line");
  t->add_flag("--no-special", targs->no_special, "Do not add special tokens (BOS...) around the text");
  t->callback([targs, text_opt, file_opt] {
    targs->has_text = text_opt->count() > 0;
    targs->has_file = file_opt->count() > 0;
    run_tokenize(*targs);
  });

  auto dargs = std::make_shared<DetokenizeArgs>();
  CLI::App* d = app.add_subcommand("detokenize", "Decode token ids with a model's tokenizer.json");
  d->add_option("--tokenizer", dargs->tokenizer, "Folder with tokenizer.json (and tokenizer_config.json)")
      ->required();
  d->add_option("--ids", dargs->ids, "Comma-separated token ids")->required();
  d->add_flag("--skip-special", dargs->skip_special, "Leave special tokens out of the text");
  d->add_flag("--json", dargs->json, "Print the text as a JSON string");
  d->callback([dargs] { run_detokenize(*dargs); });
}

}  // namespace lp::cli
