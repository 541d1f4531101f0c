// Opening a file that outside input points at (an adapter folder a client named over HTTP) without being led
// elsewhere: the file must be a regular file, and with a confinement root its real path, read back from the
// opened descriptor, must lie inside that root, so a symlink (of the file or of any folder above it) cannot
// lead out of it, however the path was checked before. Opening never blocks: a FIFO is refused at once
// instead of waiting for a writer. Every reader of adapter files (json_file, safetensors) opens through here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

namespace lp::io {

// An owned file descriptor (closed by the destructor); move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset();

 private:
  int fd_ = -1;
};

struct OpenedFile {
  UniqueFd fd;                      // read-only, blocking (O_NONBLOCK is cleared once it is known regular)
  uint64_t size = 0;                // st_size at open
  std::filesystem::path real_path;  // what the descriptor refers to (/proc/self/fd), canonical
};

// Opens `path` for reading. Throws lp::Error naming `path` (never the target of a symlink, never content):
//   kNotFound   no such file (or a dangling symlink);
//   kForbidden  `confine_root` is set and the opened file's real path is not inside it (the root itself
//               is canonicalized here);
//   kInvalid    not a regular file (FIFO, socket, device, folder) or any other failure to open or stat.
// A path outside the root is refused before the open when a pre-check can tell (so opening a device outside
// the root has no side effect); the check that counts is the one on the opened descriptor.
OpenedFile open_regular_file(const std::filesystem::path& path,
                             const std::optional<std::filesystem::path>& confine_root = std::nullopt);

// True when the canonical path `p` equals the canonical `root` or lies below it (component-wise, so
// "/a/bc" is not inside "/a/b").
bool path_is_within(const std::filesystem::path& p, const std::filesystem::path& root);

// Whether `path` names a directory entry at all, without following a final symlink: true for a dangling
// symlink too. For probes ("is there an adapter_model.safetensors?") that must not reveal, by their answer,
// whether a symlink's target exists; the open that follows decides whether the file may be used.
bool entry_exists(const std::filesystem::path& path);

}  // namespace lp::io
