#include "util/server_fixture.h"

#include <csignal>

#include "text/demo_tokenizer.h"

namespace lp::test {

FakeServer::FakeServer(const std::string& tag, server::ServerOptions o, std::filesystem::path model_dir,
                       bool attach)
    : dir(tag) {
  std::signal(SIGPIPE, SIG_IGN);  // a client that goes away must not kill the test
  if (model_dir.empty()) {
    model_dir = dir.path() / "model";
    text::write_demo_tokenizer(model_dir, 600, 1);
  }
  tok.emplace(text::Tokenizer::from_dir(model_dir));
  tmpl.emplace(text::ChatTemplate::from_dir(model_dir));
  o.port = 0;
  o.served_model_name = "base";
  o.model_dir = model_dir.string();
  server = std::make_unique<server::Server>(std::move(o));
  port = server->bind();
  thread = std::thread([this] { server->listen(); });
  if (attach) server->attach(&backend, &*tok, &*tmpl);
}

FakeServer::~FakeServer() {
  server->stop();
  thread.join();
}

}  // namespace lp::test
