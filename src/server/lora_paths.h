// Where a client may point the server at adapter folders. With --lora-root DIR, every path a client names
// (POST /v1/load_lora_adapter) must lie inside DIR after resolving "..", "." and symlinks; anything else is
// refused with 403 before any file is opened. The on-demand resolver maps an adapter *name* to DIR/<name>/,
// accepting only plain names (no separators, no leading dot), and applies the same containment check, so a
// symlink DIR/x -> /elsewhere is refused too.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace lp::server {

// The folder the client means by `requested`: relative paths are taken relative to `root` when there is one
// (else to the working directory). Throws ApiError: 403 when outside `root`, 404 when it does not exist,
// 400 when empty.
std::filesystem::path resolve_adapter_path(const std::optional<std::filesystem::path>& root,
                                           const std::string& requested);

// True when `name` could name a folder directly under the root ([A-Za-z0-9._-], not starting with '.').
bool is_plain_adapter_name(const std::string& name);

// DIR/<name> when it is an existing folder inside `root`; nullopt when the name is not plain or there is no
// such folder. Throws ApiError(403) when DIR/<name> resolves outside the root (a symlink escape).
std::optional<std::filesystem::path> find_adapter_under_root(const std::filesystem::path& root,
                                                             const std::string& name);

}  // namespace lp::server
