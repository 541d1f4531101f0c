// io::open_regular_file, the one way adapter files are opened: inside the root it opens regular files
// (also through symlinks that stay inside); a symlink of the file or of a folder that leads out, a ".." path
// and a dangling symlink are kForbidden; a FIFO, a folder or a socket are kInvalid at once (a FIFO never
// blocks the open); errors never carry the bytes of the file they were about, including the JSON readers'
// syntax errors and a safetensors header's.
#include "io/file_open.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <future>

#include "core/check.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "util/test_util.h"

namespace lp::io {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kSecret = "TOP-SECRET-c0ffee";

// A root folder with a regular file inside, and a folder beside the root (outside it) holding a file.
struct Tree {
  TempDir tmp{"fopen"};
  fs::path root = tmp / "root";
  fs::path outside = tmp / "elsewhere";
  Tree() {
    fs::create_directories(root / "sub");
    fs::create_directories(outside);
    test::write_file(root / "sub" / "in.txt", "inside");
    test::write_file(outside / "secret.txt", kSecret);
  }
};

// The kind and message open_regular_file throws ("" / kInvalid when it opens).
std::pair<ErrorKind, std::string> open_error(const fs::path& p, const std::optional<fs::path>& root) {
  try {
    open_regular_file(p, root);
  } catch (const Error& e) {
    return {e.kind(), e.what()};
  }
  return {ErrorKind::kInvalid, ""};
}

std::string read_all(int fd) {
  std::string s(256, '\0');
  ssize_t n = ::read(fd, s.data(), s.size());
  s.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return s;
}

TEST(OpenRegularFile, OpensARegularFileInsideTheRootAndReportsItsRealPath) {
  Tree t;
  OpenedFile f = open_regular_file(t.root / "sub" / "in.txt", t.root);
  EXPECT_EQ(read_all(f.fd.get()), "inside");
  EXPECT_EQ(f.size, 6u);
  EXPECT_EQ(f.real_path, fs::canonical(t.root / "sub" / "in.txt"));
  // A symlink that stays inside the root is fine (Hugging Face caches are made of them).
  fs::create_symlink("sub/in.txt", t.root / "link.txt");
  EXPECT_EQ(read_all(open_regular_file(t.root / "link.txt", t.root).fd.get()), "inside");
}

TEST(OpenRegularFile, SymlinksAndDotDotLeadingOutAreForbidden) {
  Tree t;
  fs::create_symlink(t.outside / "secret.txt", t.root / "abs_link.txt");
  fs::create_symlink("../elsewhere/secret.txt", t.root / "rel_link.txt");
  fs::create_directory_symlink(t.outside, t.root / "dirlink");
  fs::create_symlink(t.outside / "missing.txt", t.root / "dangling.txt");
  for (const fs::path& p : {t.root / "abs_link.txt", t.root / "rel_link.txt",
                            t.root / "dirlink" / "secret.txt", t.root / "dangling.txt"}) {
    auto [kind, msg] = open_error(p, t.root);
    EXPECT_EQ(kind, ErrorKind::kForbidden) << p << ": " << msg;
    EXPECT_THAT(msg, Not(HasSubstr(kSecret)));
    EXPECT_THAT(msg, Not(HasSubstr("elsewhere"))) << "the message names the target of the link";
  }
  for (const fs::path& p :
       {t.root / "sub" / ".." / ".." / "elsewhere" / "secret.txt", t.outside / "secret.txt"}) {
    auto [kind, msg] = open_error(p, t.root);
    EXPECT_EQ(kind, ErrorKind::kForbidden) << p << ": " << msg;
    EXPECT_THAT(msg, Not(HasSubstr(kSecret)));
  }
  // Unconfined (the operator's --lora-modules), the same links are followed.
  EXPECT_EQ(read_all(open_regular_file(t.root / "rel_link.txt").fd.get()), kSecret);
}

TEST(OpenRegularFile, MissingFileIsNotFound) {
  Tree t;
  EXPECT_EQ(open_error(t.root / "nope.txt", t.root).first, ErrorKind::kNotFound);
  EXPECT_EQ(open_error(t.root / "nope.txt", std::nullopt).first, ErrorKind::kNotFound);
}

TEST(OpenRegularFile, FolderAndSocketAreNotRegularFiles) {
  Tree t;
  auto [kind, msg] = open_error(t.root / "sub", t.root);
  EXPECT_EQ(kind, ErrorKind::kInvalid);
  EXPECT_THAT(msg, HasSubstr("is not a regular file (a folder)"));

  int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string sp = (t.root / "sock").string();
  ASSERT_LT(sp.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, sp.c_str(), sp.size() + 1);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  auto [skind, smsg] = open_error(t.root / "sock", t.root);
  EXPECT_EQ(skind, ErrorKind::kInvalid) << smsg;
  ::close(s);
}

// A FIFO must be refused at once: a blocking open would wait for a writer forever. Should the open block
// (the bug), the test opens the FIFO for writing itself, so the stuck thread returns and the test fails
// instead of hanging.
TEST(OpenRegularFile, FifoIsRefusedAtOnceWithAndWithoutRoot) {
  Tree t;
  const fs::path fifo = t.root / "adapter_model.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (bool confined : {true, false}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto fut = std::async(std::launch::async, [&] {
      return open_error(fifo, confined ? std::optional<fs::path>(t.root) : std::nullopt);
    });
    if (fut.wait_for(std::chrono::duration<double>(1.0 * test::time_scale())) != std::future_status::ready) {
      int w = ::open(fifo.c_str(), O_WRONLY);  // releases the blocked reader
      fut.wait();
      if (w >= 0) ::close(w);
      FAIL() << "opening a FIFO blocked (confined: " << confined << ")";
    }
    auto [kind, msg] = fut.get();
    EXPECT_EQ(kind, ErrorKind::kInvalid);
    EXPECT_THAT(msg, HasSubstr("is not a regular file (a FIFO)"));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1) * test::time_scale());
  }
  // The readers above it refuse it the same way.
  EXPECT_THROW(SafetensorsFile::open(fifo, t.root), Error);
  EXPECT_THROW(read_json_file(fifo, kMaxJsonFileBytes, t.root), Error);
}

TEST(OpenRegularFile, PathIsWithinComparesWholeComponents) {
  EXPECT_TRUE(path_is_within("/a/b", "/a/b"));
  EXPECT_TRUE(path_is_within("/a/b/c", "/a/b"));
  EXPECT_TRUE(path_is_within("/a/b/c", "/a/b/"));
  EXPECT_FALSE(path_is_within("/a/bc", "/a/b"));
  EXPECT_FALSE(path_is_within("/a", "/a/b"));
  EXPECT_TRUE(path_is_within("/anything", "/"));
}

TEST(OpenRegularFile, EntryExistsDoesNotFollowTheLastSymlink) {
  Tree t;
  fs::create_symlink(t.outside / "missing.txt", t.root / "dangling.txt");
  EXPECT_TRUE(entry_exists(t.root / "dangling.txt"));
  EXPECT_TRUE(entry_exists(t.root / "sub" / "in.txt"));
  EXPECT_FALSE(entry_exists(t.root / "nothing"));
}

// The reported bug: adapter_config.json -> a file outside the root echoed that file in the error.
TEST(OpenRegularFile, JsonReadersNeitherFollowOutNorEchoContent) {
  Tree t;
  fs::create_symlink(t.outside / "secret.txt", t.root / "adapter_config.json");
  try {
    read_ordered_json_file(t.root / "adapter_config.json", kMaxJsonFileBytes, t.root);
    FAIL() << "read through a symlink out of the root";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kForbidden);
    EXPECT_THAT(e.what(), Not(HasSubstr(kSecret)));
  }
  // A malformed JSON file (read legitimately) is described by position, not by its bytes.
  test::write_file(t.root / "bad.json", std::string("{\"r\": ") + kSecret + "}");
  try {
    read_json_file(t.root / "bad.json", kMaxJsonFileBytes, t.root);
    FAIL() << "malformed JSON accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    EXPECT_THAT(e.what(), HasSubstr("bad.json"));
    EXPECT_THAT(e.what(), HasSubstr("(byte 7)"));  // '{"r": ' is 6 bytes; the 7th, 'T', starts no value
    EXPECT_THAT(e.what(), Not(HasSubstr("TO")));
    EXPECT_THAT(e.what(), Not(HasSubstr("last read")));
  }
  // Unconfined, the symlink is followed, and the error still does not echo what it found.
  try {
    read_json_file(t.root / "adapter_config.json");
    FAIL() << "a non-JSON file parsed";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), Not(HasSubstr("TO")));
  }
}

TEST(OpenRegularFile, SafetensorsHeaderErrorsDoNotEchoTheHeader) {
  Tree t;
  std::string header = std::string("{\"x\": ") + kSecret + "}";
  std::string img(8, '\0');
  for (int i = 0; i < 8; ++i) img[i] = static_cast<char>(header.size() >> (8 * i) & 0xff);
  test::write_file(t.root / "m.safetensors", img + header);
  try {
    SafetensorsFile::open(t.root / "m.safetensors", t.root);
    FAIL() << "a malformed header parsed";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("invalid JSON header in"));
    EXPECT_THAT(e.what(), Not(HasSubstr("TO")));
  }
  fs::create_symlink(t.root / "m.safetensors", t.outside / "m.safetensors");
  fs::create_symlink(t.outside / "m.safetensors", t.root / "escape.safetensors");
  try {
    SafetensorsFile::open(t.root / "escape.safetensors", t.root);
    // The symlink chain ends inside the root: allowed, and it fails on the header as above.
    FAIL() << "a malformed header parsed";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid) << e.what();
  }
}

}  // namespace
}  // namespace lp::io
