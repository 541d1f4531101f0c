// The fixture of the in-process HTTP-layer tests: a loraplex Server on a loopback port, listening on its own
// thread and answering through a scripted FakeBackend, with the tokenizer and chat template of a model
// folder. Tests derive from it to add the client calls they make.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "server/server.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "util/fake_backend.h"
#include "util/test_util.h"

namespace lp::test {

struct FakeServer {
  TempDir dir;
  FakeBackend backend;
  std::optional<text::Tokenizer> tok;
  std::optional<text::ChatTemplate> tmpl;
  std::unique_ptr<server::Server> server;
  std::thread thread;
  int port = 0;

  // `tag` names the TempDir. `o` gets port 0 (any free one), served_model_name "base" and model_dir; an empty
  // `model_dir` means the demo tokenizer (600 ids, seed 1), written to dir/model. With `attach` false the
  // server runs without a backend (as while the engine loads).
  FakeServer(const std::string& tag, server::ServerOptions o, std::filesystem::path model_dir = {},
             bool attach = true);
  ~FakeServer();
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;
};

}  // namespace lp::test
