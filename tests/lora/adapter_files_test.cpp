// The files of an adapter a client named are opened safely: with a confinement root (--lora-root), an
// adapter_model.safetensors or adapter_config.json that is a symlink out of the root is refused (kForbidden)
// without its content in the message; a FIFO is refused at once; a pickle-only folder is refused without the
// pickle being opened; and AdapterManager keeps the confinement for every later reload from disk, not only at
// registration.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <future>

#include "core/check.h"
#include "lora/adapter.h"
#include "lora/adapter_cache_test_util.h"
#include "lora/adapter_manager.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using Status = AdapterManager::Status;
using namespace cache_test;

constexpr const char* kSecret = "TOP-SECRET-c0ffee";

struct Tree {
  test::TempDir tmp{"adfiles"};
  fs::path root = tmp / "root";
  fs::path elsewhere = tmp / "elsewhere";
  model::ModelConfig cfg = tiny_config();
  Tree() {
    fs::create_directories(root);
    fs::create_directories(elsewhere);
    test::write_file(elsewhere / "secret.json", kSecret);
  }
  fs::path adapter(const std::string& name, int i = 0) { return write_adapter(root, name, cfg, i); }
};

// Runs `fn` on another thread; fails (and unblocks a FIFO reader by writing to `fifo`) past one second.
template <class Fn>
std::pair<ErrorKind, std::string> error_within_a_second(Fn fn, const fs::path& fifo) {
  auto fut = std::async(std::launch::async, [&]() -> std::pair<ErrorKind, std::string> {
    try {
      fn();
    } catch (const Error& e) {
      return {e.kind(), e.what()};
    }
    return {ErrorKind::kInvalid, ""};
  });
  if (fut.wait_for(std::chrono::duration<double>(1.0 * test::time_scale())) != std::future_status::ready) {
    int w = ::open(fifo.c_str(), O_WRONLY);  // the blocked reader gets its writer and returns
    fut.wait();
    if (w >= 0) ::close(w);
    ADD_FAILURE() << "blocked on the FIFO " << fifo;
  }
  return fut.get();
}

TEST(AdapterFiles, SymlinkedWeightsOrConfigLeadingOutOfTheRootAreForbidden) {
  Tree t;
  BaseShapes base = base_shapes(t.cfg);
  fs::path a = t.adapter("a");
  fs::path b = write_adapter(t.elsewhere, "b", t.cfg, 1);  // a valid adapter outside the root
  EXPECT_EQ(load_adapter(a, base, t.root).weights.size(), load_adapter(a, base).weights.size());

  fs::remove(a / "adapter_model.safetensors");
  fs::create_symlink(b / "adapter_model.safetensors", a / "adapter_model.safetensors");
  try {
    load_adapter(a, base, t.root);
    FAIL() << "weights outside the root were loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kForbidden) << e.what();
    EXPECT_THAT(e.what(), Not(HasSubstr("elsewhere")));
  }
  EXPECT_NO_THROW(load_adapter(a, base)) << "unconfined (--lora-modules), a symlink is the operator's choice";

  fs::path c = t.adapter("c", 2);
  fs::remove(c / "adapter_config.json");
  fs::create_symlink(t.elsewhere / "secret.json", c / "adapter_config.json");
  try {
    load_adapter(c, base, t.root);
    FAIL() << "a config outside the root was read";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kForbidden) << e.what();
    EXPECT_THAT(e.what(), Not(HasSubstr("TOP")));
  }
  // Unconfined, the file is read, and the syntax error still names a position, not the bytes.
  try {
    load_adapter(c, base);
    FAIL() << "a non-JSON config parsed";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("invalid JSON"));
    EXPECT_THAT(e.what(), Not(HasSubstr("TOP")));
  }
}

TEST(AdapterFiles, FifoWeightsAreRefusedAtOnce) {
  Tree t;
  fs::path a = t.adapter("a");
  fs::remove(a / "adapter_model.safetensors");
  ASSERT_EQ(::mkfifo((a / "adapter_model.safetensors").c_str(), 0600), 0);
  for (bool confined : {true, false}) {
    auto [kind, msg] = error_within_a_second(
        [&] {
          load_adapter(a, base_shapes(t.cfg), confined ? std::optional<fs::path>(t.root) : std::nullopt);
        },
        a / "adapter_model.safetensors");
    EXPECT_EQ(kind, ErrorKind::kInvalid);
    EXPECT_THAT(msg, HasSubstr("is not a regular file (a FIFO)"));
  }
}

// The pickle is a FIFO: had the loader opened it (to sniff it, or to read it), it would block; it must only
// be looked up by name and refused with the conversion hint.
TEST(AdapterFiles, PickleOnlyFolderIsRefusedWithoutOpeningThePickle) {
  Tree t;
  fs::path a = t.adapter("a");
  fs::remove(a / "adapter_model.safetensors");
  ASSERT_EQ(::mkfifo((a / "adapter_model.bin").c_str(), 0600), 0);
  auto [kind, msg] =
      error_within_a_second([&] { load_adapter(a, base_shapes(t.cfg), t.root); }, a / "adapter_model.bin");
  EXPECT_EQ(kind, ErrorKind::kInvalid);
  EXPECT_THAT(msg, HasSubstr("has adapter_model.bin but no adapter_model.safetensors"));
  EXPECT_THAT(msg, HasSubstr("pickle files are never parsed"));
}

ManagerOptions manager_options() {
  ManagerOptions o;
  o.max_loras = 1;
  o.max_cpu_loras = 1;
  o.max_lora_rank = 8;
  o.keep_validated = false;  // registration validates, then the adapter starts on disk: acquire reloads it
  return o;
}

TEST(AdapterFiles, ManagerKeepsTheConfinementForEveryReloadFromDisk) {
  Tree t;
  AdapterManager m(t.cfg, manager_options());
  fs::path a = t.adapter("a");
  m.register_adapter("a", a, false, false, t.root);
  EXPECT_EQ(m.info("a")->tier, "disk");
  // After registration, the weights are swapped for a symlink to another (valid) adapter outside the root.
  fs::path b = write_adapter(t.elsewhere, "b", t.cfg, 1);
  fs::remove(a / "adapter_model.safetensors");
  fs::create_symlink(b / "adapter_model.safetensors", a / "adapter_model.safetensors");
  AdapterManager::Acquire r = acquire_ready(m, "a");
  EXPECT_EQ(r.status, Status::kFailed);
  EXPECT_THAT(r.error, HasSubstr("outside the allowed root"));
  EXPECT_EQ(m.counters().load_failures, 1);

  // The same swap on an unconfined registration (the operator's --lora-modules) loads.
  fs::path u = write_adapter(t.tmp.path(), "u", t.cfg, 2);
  AdapterManager m2(t.cfg, manager_options());
  m2.register_adapter("u", u);
  fs::remove(u / "adapter_model.safetensors");
  fs::create_symlink(b / "adapter_model.safetensors", u / "adapter_model.safetensors");
  r = acquire_ready(m2, "u");
  EXPECT_EQ(r.status, Status::kReady) << r.error;
  if (r.status == Status::kReady) m2.release(r.slot);
}

TEST(AdapterFiles, ManagerRefusesAConfinedFolderOutsideTheRoot) {
  Tree t;
  AdapterManager m(t.cfg, manager_options());
  fs::path b = write_adapter(t.elsewhere, "b", t.cfg, 1);
  try {
    m.register_adapter("b", b, false, false, t.root);
    FAIL() << "a folder outside the root was registered";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kForbidden) << e.what();
  }
  fs::create_directory_symlink(b, t.root / "link");
  try {
    m.register_adapter("b", t.root / "link", false, false, t.root);
    FAIL() << "a symlinked folder leading out of the root was registered";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kForbidden) << e.what();
  }
  EXPECT_FALSE(m.is_registered("b"));
}

}  // namespace
}  // namespace lp::lora
