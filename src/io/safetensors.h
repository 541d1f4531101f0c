// safetensors files: memory-mapped, zero-copy, validated before any tensor byte is touched.
// Format: u64 little-endian header length N, then N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets},
// "__metadata__": {str: str}}, then the data area; offsets are relative to the data area.
// Every violation (header length past the file or over 100 MB, bad JSON, duplicate name, unknown or
// unsupported dtype, shape x dtype != byte range, range outside the data area, overlapping ranges) throws
// lp::Error naming the file and the tensor. F32/F16/BF16 tensors are TensorInfo (find, all); I32 tensors
// (the packed int4 weights, zero points and g_idx of AWQ / GPTQ checkpoints) are I32TensorInfo (find_i32). A model folder may be one file or shards listed in
// model.safetensors.index.json (TensorSet).
// Cost: open() maps the file and parses only the JSON header; tensor bytes are paged in when first read.
// A file truncated by another process while mapped raises SIGBUS on access; files are treated as immutable.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace lp::io {

// A tensor shape for messages: "[576, 1536]", "[]".
std::string shape_str(std::span<const int64_t> shape);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  // Points into the mapping; valid while the owning file lives. Not necessarily aligned to the element
  // size: the format packs tensors back to back (the reference writer orders them by dtype size, so its
  // files are aligned; others may not be). Check aligned() before reading through a typed pointer.
  const void* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const;
  std::string shape_str() const;  // "[576, 1536]"
  bool aligned() const;           // data is a multiple of dtype_size(dtype)
};

// An I32 tensor. Kept apart from TensorInfo, whose dtype is one the kernels compute with, so that no path
// that reads float tensors (weights, adapters, merge) can take packed integers for a matrix: find() and
// all() never return one. Only model/checkpoint_quant reads these, element by element through at().
struct I32TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // little-endian int32, not necessarily aligned
  size_t nbytes = 0;
  int64_t numel() const;
  std::string shape_str() const;
  int32_t at(int64_t i) const;  // element i in row-major order (no bounds check)
};

inline constexpr size_t kMaxSafetensorsHeaderBytes = size_t{100} << 20;  // 100 MB, as the reference

class SafetensorsFile {
 public:
  // Maps and validates the file. Throws lp::Error on any problem. The file is opened with
  // io::open_regular_file(path, confine_root) (a regular file; inside the root when one is given) and mapped
  // from that descriptor.
  static std::unique_ptr<SafetensorsFile> open(
      const std::filesystem::path& path,
      const std::optional<std::filesystem::path>& confine_root = std::nullopt);
  // Validates an in-memory image (used by the fuzzer and tests); `data` must outlive the object.
  static std::unique_ptr<SafetensorsFile> parse(const void* data, size_t size, const std::string& label);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr when absent (or I32)
  const std::vector<I32TensorInfo>& i32_tensors() const { return i32_tensors_; }
  const I32TensorInfo* find_i32(const std::string& name) const;  // nullptr when absent (or not I32)
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }
  // Whether [p, p + n) lies inside this file's mapping (false for a parse()d in-memory image).
  bool maps(const void* p, size_t n) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::vector<I32TensorInfo> i32_tensors_;
  std::map<std::string, size_t> i32_index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a Hugging Face model folder (or PEFT adapter folder): `model.safetensors`, or the shards
// named by `model.safetensors.index.json` (each shard validated; a tensor claimed by the index must exist
// in its shard; a name may not appear in two shards), or an explicit file.
class TensorSet {
 public:
  // `confine_root`: every file read (index, shards) must be a regular file inside it (see file_open.h).
  static TensorSet open_dir(const std::filesystem::path& dir, const std::string& stem = "model",
                            const std::optional<std::filesystem::path>& confine_root = std::nullopt);
  static TensorSet open_file(const std::filesystem::path& file,
                             const std::optional<std::filesystem::path>& confine_root = std::nullopt);
  const TensorInfo* find(const std::string& name) const;          // F32/F16/BF16 only
  const I32TensorInfo* find_i32(const std::string& name) const;  // I32 only
  std::vector<const TensorInfo*> all() const;  // sorted by name; the float tensors only
  size_t total_bytes() const;                  // all tensors, I32 included
  // For a caller that copied [data, data + n) (which must lie inside one of this set's file mappings):
  // gives the whole pages of that range back to the OS. The mappings are private and read-only, so a later
  // read through a TensorInfo faults the pages in again from the file; nothing is lost but residency.
  void drop_resident(const void* data, size_t n) const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> by_name_;
  std::map<std::string, const I32TensorInfo*> i32_by_name_;
};

// Writes a safetensors file (header padded with spaces to a multiple of 8 bytes, as the reference does;
// tensors in the order added, back to back; `__metadata__` first when set). Add tensors in decreasing
// dtype size (F32 before F16/BF16) to keep every tensor aligned for zero-copy readers.
class SafetensorsWriter {
 public:
  // Copies nothing: `data` must stay valid until write().
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data);
  void add_i32(const std::string& name, std::vector<int64_t> shape, const int32_t* data);  // dtype I32
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string name;
    std::string_view dtype;  // safetensors spelling
    size_t elem_size;
    std::vector<int64_t> shape;
    const void* data;
  };
  void add_entry(const std::string& name, std::string_view dtype, size_t elem_size, std::vector<int64_t> shape,
                 const void* data);
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace lp::io
