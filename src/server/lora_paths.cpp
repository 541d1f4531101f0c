#include "server/lora_paths.h"

#include "io/file_open.h"
#include "server/api_error.h"

namespace lp::server {

namespace fs = std::filesystem;

namespace {

fs::path canonical_root(const fs::path& root) {
  std::error_code ec;
  fs::path r = fs::canonical(root, ec);
  if (ec) throw ApiError(fmt::format("the LoRA root '{}' is not accessible", root.string()), ErrorKind::kNotFound);
  return r;
}

}  // namespace

fs::path resolve_adapter_path(const std::optional<fs::path>& root, const std::string& requested) {
  if (requested.empty()) fail_param("lora_path", "'lora_path' must not be empty");
  if (requested.find('\0') != std::string::npos) fail_param("lora_path", "'lora_path' holds a NUL byte");
  fs::path p(requested);
  std::error_code ec;
  if (root) {
    fs::path r = canonical_root(*root);
    if (p.is_relative()) p = r / p;
    fs::path resolved = fs::weakly_canonical(p, ec);  // follows symlinks of the existing prefix, folds ".."
    if (ec || !io::path_is_within(resolved, r))
      throw ApiError(fmt::format("the path '{}' is outside the allowed LoRA root", requested), ErrorKind::kForbidden,
                     "lora_path");
    p = resolved;
  } else {
    fs::path resolved = fs::weakly_canonical(fs::absolute(p, ec), ec);
    if (!ec) p = resolved;
  }
  if (!fs::exists(p, ec))
    throw ApiError(fmt::format("No adapter found for {}", requested), ErrorKind::kNotFound, "lora_path");
  return p;
}

bool is_plain_adapter_name(const std::string& name) {
  if (name.empty() || name.size() > 255 || name[0] == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-';
    if (!ok) return false;
  }
  return true;
}

std::optional<fs::path> find_adapter_under_root(const fs::path& root, const std::string& name) {
  if (!is_plain_adapter_name(name)) return std::nullopt;
  fs::path r = canonical_root(root);
  std::error_code ec;
  fs::path candidate = r / name;
  if (!fs::is_directory(candidate, ec)) return std::nullopt;
  fs::path resolved = fs::canonical(candidate, ec);
  if (ec) return std::nullopt;
  if (!io::path_is_within(resolved, r))
    throw ApiError(fmt::format("the adapter folder for '{}' resolves outside the allowed LoRA root", name),
                   ErrorKind::kForbidden, "model");
  return resolved;
}

}  // namespace lp::server
