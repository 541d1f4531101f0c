#include "io/file_open.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "core/check.h"

namespace lp::io {

namespace fs = std::filesystem;

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.release();
  }
  return *this;
}

void UniqueFd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool path_is_within(const fs::path& p, const fs::path& root) {
  auto pi = p.begin();
  for (auto ri = root.begin(); ri != root.end(); ++ri) {
    if (ri->empty()) continue;  // a trailing separator on the root
    if (pi == p.end() || *pi != *ri) return false;
    ++pi;
  }
  return true;
}

bool entry_exists(const fs::path& path) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(path, ec));
}

namespace {

const char* file_type_name(mode_t m) {
  if (S_ISDIR(m)) return "a folder";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a plain file";
}

// The canonical path the descriptor refers to. /proc/self/fd/N names the opened inode whatever symlinks led
// to it; without /proc, the canonical form of `path` is used, and only if it still names the same inode.
std::optional<fs::path> real_path_of(int fd, const fs::path& path, const struct stat& st) {
  std::error_code ec;
  fs::path proc = fs::read_symlink(fs::path("/proc/self/fd") / std::to_string(fd), ec);
  if (!ec && proc.is_absolute()) return proc;
  fs::path canon = fs::canonical(path, ec);
  struct stat again {};
  if (ec || ::stat(canon.c_str(), &again) != 0 || again.st_dev != st.st_dev || again.st_ino != st.st_ino)
    return std::nullopt;
  return canon;
}

}  // namespace

OpenedFile open_regular_file(const fs::path& path, const std::optional<fs::path>& confine_root) {
  const std::string label = path.string();
  std::optional<fs::path> root;
  std::error_code ec;
  if (confine_root) {
    root = fs::canonical(*confine_root, ec);
    if (ec) fail_as(ErrorKind::kForbidden, "cannot open {}: the allowed root is not accessible", label);
    // Early refusal, so that nothing outside the root is even opened (opening some devices has effects).
    fs::path pre = fs::weakly_canonical(fs::absolute(path, ec), ec);
    if (!ec && !path_is_within(pre, *root))
      fail_as(ErrorKind::kForbidden, "{} resolves outside the allowed root", label);
  }
  // O_NONBLOCK: opening a FIFO for reading must not wait for a writer. O_NOCTTY: a terminal never becomes
  // ours. Neither matters for the regular file that is all we accept.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) {
    const int err = errno;
    struct stat lst {};
    const bool is_link = ::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode);
    if (err == ENOENT && is_link && root) {
      // A dangling symlink: answer as for one that leads outside, so that the answer does not tell whether
      // some path outside the root exists.
      fail_as(ErrorKind::kForbidden,
              "{} is a symlink that does not resolve to a file inside the allowed root", label);
    }
    if (err == ENOENT) fail_as(ErrorKind::kNotFound, "{} does not exist", label);
    fail("cannot open {}: {}", label, std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail("cannot stat {}: {}", label, std::strerror(errno));
  OpenedFile out;
  if (root) {
    auto real = real_path_of(fd.get(), path, st);
    if (!real || !path_is_within(*real, *root))
      fail_as(ErrorKind::kForbidden, "{} resolves outside the allowed root", label);
    out.real_path = *real;
  } else {
    out.real_path = fs::weakly_canonical(fs::absolute(path, ec), ec);
  }
  if (!S_ISREG(st.st_mode)) fail("{} is not a regular file ({})", label, file_type_name(st.st_mode));
  // Reads of a regular file never block anyway; clear the flag so nothing downstream sees EAGAIN semantics.
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) (void)::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  out.size = static_cast<uint64_t>(st.st_size);
  out.fd = std::move(fd);
  return out;
}

}  // namespace lp::io
