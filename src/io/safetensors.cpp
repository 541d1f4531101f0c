#include "io/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>

#include "core/buffer.h"
#include "core/check.h"
#include "io/file_open.h"
#include "io/json_file.h"

namespace lp::io {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated against overflow when the file was parsed
  return n;
}

std::string shape_str(std::span<const int64_t> shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string TensorInfo::shape_str() const {
  return io::shape_str(shape);
}

bool TensorInfo::aligned() const {
  return reinterpret_cast<uintptr_t>(data) % dtype_size(dtype) == 0;
}

int64_t I32TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string I32TensorInfo::shape_str() const {
  return io::shape_str(shape);
}

int32_t I32TensorInfo::at(int64_t i) const {
  const auto* p = static_cast<const uint8_t*>(data) + 4 * i;
  return static_cast<int32_t>(static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                              static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24);
}

namespace {

// Dtypes the safetensors format defines that loraplex does not compute with.
constexpr std::array<std::string_view, 15> kUnsupportedDtypes = {
    "F64", "I64",     "U64",     "U32",     "I16",     "U16",     "I8",
    "U8",  "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};

std::optional<DType> parse_dtype(std::string_view s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  return std::nullopt;
}

// Reads a JSON value as a non-negative integer that fits in int64_t.
std::optional<uint64_t> as_index(const json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return u;
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0) return std::nullopt;
    return static_cast<uint64_t>(i);
  }
  return std::nullopt;
}

struct Range {
  uint64_t begin, end;
  size_t tensor;  // index into the tensor list; with kI32Bit set, into the I32 tensor list
};
constexpr size_t kI32Bit = size_t{1} << 63;

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const void* data, size_t size,
                                                        const std::string& label) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  if (size < 8) {
    fail("{} is too small to be a safetensors file ({} bytes; the 8-byte header length is missing)", label,
         size);
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | bytes[i];  // little-endian u64
  if (n > kMaxSafetensorsHeaderBytes) {
    fail("header length {} in {} exceeds the {} MB limit", n, label, kMaxSafetensorsHeaderBytes >> 20);
  }
  if (n > size - 8) {
    fail("header length {} in {} runs past the end of the file (file is {} bytes)", n, label, size);
  }
  std::string_view text(reinterpret_cast<const char*>(bytes + 8), n);
  json header = parse_json_strict(text, label, "header", "tensor name");
  if (!header.is_object()) {
    fail("JSON header in {} is not an object (found {})", label, json_type_name(header));
  }

  const uint8_t* area = bytes + 8 + n;
  const uint64_t area_size = size - 8 - n;
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = label;
  std::vector<Range> ranges;
  f->tensors_.reserve(header.size());

  for (auto item = header.cbegin(); item != header.cend(); ++item) {
    const std::string& name = item.key();  // (not a structured binding: clang 14 cannot capture those)
    const json& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        fail("__metadata__ in {} must be an object of strings (found {})", label, json_type_name(entry));
      }
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          fail("__metadata__ value for \"{}\" in {} must be a string (found {})", k, label,
               json_type_name(v));
        }
        f->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) {
      fail("entry for tensor {} in {} must be an object (found {})", name, label, json_type_name(entry));
    }
    auto field = [&](const char* key) -> const json& {
      auto it = entry.find(key);
      if (it == entry.end()) fail("tensor {} in {} has no \"{}\"", name, label, key);
      return *it;
    };

    // dtype
    const json& jd = field("dtype");
    if (!jd.is_string())
      fail("dtype of tensor {} in {} must be a string (found {})", name, label, json_type_name(jd));
    const auto& ds = jd.get_ref<const std::string&>();
    auto dt = parse_dtype(ds);
    const bool i32 = ds == "I32";  // kept apart: see I32TensorInfo
    if (!dt && !i32) {
      if (std::find(kUnsupportedDtypes.begin(), kUnsupportedDtypes.end(), ds) != kUnsupportedDtypes.end()) {
        fail("unsupported dtype {} for tensor {} in {} (supported: F32, F16, BF16; I32 for packed int4 weights)",
             ds, name, label);
      }
      fail("unknown dtype \"{}\" for tensor {} in {}", ds, name, label);
    }

    // shape, with an overflow-checked element and byte count
    const json& js = field("shape");
    if (!js.is_array()) {
      fail("shape of tensor {} in {} must be an array of non-negative integers (found {})", name, label,
           json_type_name(js));
    }
    TensorInfo t;
    t.name = name;
    t.dtype = dt.value_or(DType::kF32);
    const uint64_t elem_size = i32 ? 4 : dtype_size(*dt);
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : js) {
      if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0) {
        fail("negative dimension {} in shape of tensor {} in {}", d.get<int64_t>(), name, label);
      }
      auto v = as_index(d);
      if (!v) {
        fail("shape of tensor {} in {} must contain non-negative integers (found {})", name, label, d.dump());
      }
      t.shape.push_back(static_cast<int64_t>(*v));
      overflow = overflow || __builtin_mul_overflow(numel, *v, &numel);
    }
    uint64_t nbytes = 0;
    overflow = overflow || numel > static_cast<uint64_t>(INT64_MAX) ||
               __builtin_mul_overflow(numel, elem_size, &nbytes);
    if (overflow) fail("shape {} of tensor {} in {} is too large (size overflows)", js.dump(), name, label);

    // data_offsets
    const json& jo = field("data_offsets");
    std::optional<uint64_t> b, e;
    if (jo.is_array() && jo.size() == 2) {
      b = as_index(jo[0]);
      e = as_index(jo[1]);
    }
    if (!b || !e) {
      fail("data_offsets of tensor {} in {} must be [begin, end] with non-negative integers (found {})", name,
           label, jo.dump());
    }
    if (*b > *e) fail("data_offsets of tensor {} in {}: begin {} > end {}", name, label, *b, *e);
    if (*e - *b != nbytes) {
      fail("tensor {} in {}: shape {} of {} needs {} bytes but data_offsets [{}, {}] span {}", name, label,
           js.dump(), ds, nbytes, *b, *e, *e - *b);
    }
    if (*e > area_size) {
      fail("data_offsets [{}, {}] of tensor {} in {} run past the end of the data area ({} bytes)", *b, *e,
           name, label, area_size);
    }
    t.data = area + *b;
    t.nbytes = static_cast<size_t>(nbytes);
    if (i32) {
      if (nbytes > 0) ranges.push_back(Range{*b, *e, kI32Bit | f->i32_tensors_.size()});
      f->i32_tensors_.push_back(I32TensorInfo{std::move(t.name), std::move(t.shape), t.data, t.nbytes});
      continue;
    }
    if (nbytes > 0) ranges.push_back(Range{*b, *e, f->tensors_.size()});
    f->tensors_.push_back(std::move(t));
  }

  // Ranges may leave gaps (the reference forbids them; we need not) but must not overlap.
  std::sort(ranges.begin(), ranges.end(), [](const Range& x, const Range& y) {
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Range& p = ranges[i - 1];
    const Range& c = ranges[i];
    if (c.begin < p.end) {
      auto name = [&](size_t i) -> const std::string& {
        return i & kI32Bit ? f->i32_tensors_[i & ~kI32Bit].name : f->tensors_[i].name;
      };
      fail("tensors {} and {} in {} overlap (data_offsets [{}, {}] and [{}, {}])", name(p.tensor),
           name(c.tensor), label, p.begin, p.end, c.begin, c.end);
    }
  }
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  for (size_t i = 0; i < f->i32_tensors_.size(); ++i) f->i32_index_[f->i32_tensors_[i].name] = i;
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& path,
                                                       const std::optional<fs::path>& confine_root) {
  const std::string label = path.string();
  OpenedFile file = open_regular_file(path, confine_root);  // regular, inside the root: or it throws
  size_t size = static_cast<size_t>(file.size);
  if (size == 0) parse("", 0, label);  // throws: too small
  // Mapped from the descriptor that passed the checks, never by path again.
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, file.fd.get(), 0);
  if (map == MAP_FAILED) fail("cannot map {}: {}", label, std::strerror(errno));
  std::unique_ptr<SafetensorsFile> f;
  try {
    f = parse(map, size, label);
  } catch (...) {
    ::munmap(map, size);
    throw;
  }
  f->path_ = path;
  f->map_ = map;
  f->map_size_ = size;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const I32TensorInfo* SafetensorsFile::find_i32(const std::string& name) const {
  auto it = i32_index_.find(name);
  return it == i32_index_.end() ? nullptr : &i32_tensors_[it->second];
}

// ---- TensorSet ----

namespace {

bool is_plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos &&
         s.find("..") == std::string::npos;
}

// Pickle checkpoints in `dir`, for the "convert to safetensors" hint.
std::vector<std::string> pickle_files(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    auto ext = it->path().extension().string();
    if (ext == ".bin" || ext == ".pt" || ext == ".pth") out.push_back(it->path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TensorSet TensorSet::open_file(const fs::path& file, const std::optional<fs::path>& confine_root) {
  TensorSet set;
  set.files_.push_back(SafetensorsFile::open(file, confine_root));
  for (const auto& t : set.files_.back()->tensors()) set.by_name_[t.name] = &t;
  for (const auto& t : set.files_.back()->i32_tensors()) set.i32_by_name_[t.name] = &t;
  return set;
}

TensorSet TensorSet::open_dir(const fs::path& dir, const std::string& stem,
                              const std::optional<fs::path>& confine_root) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("{} is not a folder", dir.string());
  const std::string single_name = stem + ".safetensors";
  const std::string index_name = stem + ".safetensors.index.json";
  const fs::path single = dir / single_name;
  const fs::path index = dir / index_name;
  // Probes by directory entry (a dangling or escaping symlink counts as present; its open then refuses it).
  if (entry_exists(single)) return open_file(single, confine_root);
  if (!entry_exists(index)) {
    std::string msg = fmt::format("no safetensors weights in {}: looked for {} and {}", dir.string(),
                                  single_name, index_name);
    auto pickles = pickle_files(dir);
    if (!pickles.empty()) {
      msg += fmt::format(
          "; found {}: pickle checkpoints (.bin/.pt/.pth) are not supported (loading them can run arbitrary "
          "code) and must be converted to safetensors",
          fmt::join(pickles, ", "));
    }
    throw Error(msg);
  }

  const std::string ilabel = index.string();
  json j = read_json_file(index, kMaxJsonFileBytes, confine_root);
  if (!j.is_object()) fail("{} must be a JSON object (found {})", ilabel, json_type_name(j));
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) fail("{} has no \"weight_map\" object", ilabel);
  if (wm->empty()) fail("\"weight_map\" in {} is empty", ilabel);

  // Open each shard once, in name order.
  std::map<std::string, size_t> shard_index;
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string()) {
      fail("weight_map entry for tensor {} in {} must be a file name (found {})", tensor, ilabel,
           json_type_name(shard));
    }
    const auto& s = shard.get_ref<const std::string&>();
    if (!is_plain_file_name(s)) {
      fail(
          "weight_map in {} names shard \"{}\" for tensor {}: shard names must be plain file names inside {}",
          ilabel, s, tensor, dir.string());
    }
    shard_index.emplace(s, 0);
  }
  TensorSet set;
  for (auto& [s, idx] : shard_index) {
    fs::path p = dir / s;
    if (!entry_exists(p)) fail("{} names shard {}, which does not exist in {}", ilabel, s, dir.string());
    idx = set.files_.size();
    set.files_.push_back(SafetensorsFile::open(p, confine_root));
  }
  for (const auto& [tensor, shard] : wm->items()) {
    const auto& s = shard.get_ref<const std::string&>();
    const SafetensorsFile& sf = *set.files_[shard_index[s]];
    if (!sf.find(tensor) && !sf.find_i32(tensor)) {
      fail("{} places tensor {} in shard {}, but that shard has no such tensor", ilabel, tensor, s);
    }
  }
  std::map<std::string, std::string> owner;  // tensor -> shard file name, to name both in the message
  for (const auto& [s, idx] : shard_index) {
    for (const auto& t : set.files_[idx]->tensors()) {
      auto [it, fresh] = owner.emplace(t.name, s);
      if (!fresh)
        fail("tensor {} appears in two shards of {}: {} and {}", t.name, dir.string(), it->second, s);
      set.by_name_[t.name] = &t;
    }
    for (const auto& t : set.files_[idx]->i32_tensors()) {
      auto [it, fresh] = owner.emplace(t.name, s);
      if (!fresh)
        fail("tensor {} appears in two shards of {}: {} and {}", t.name, dir.string(), it->second, s);
      set.i32_by_name_[t.name] = &t;
    }
  }
  return set;
}

const TensorInfo* TensorSet::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const I32TensorInfo* TensorSet::find_i32(const std::string& name) const {
  auto it = i32_by_name_.find(name);
  return it == i32_by_name_.end() ? nullptr : it->second;
}

std::vector<const TensorInfo*> TensorSet::all() const {
  std::vector<const TensorInfo*> out;
  out.reserve(by_name_.size());
  for (const auto& [name, t] : by_name_) out.push_back(t);
  return out;
}

bool SafetensorsFile::maps(const void* p, size_t n) const {
  const auto a = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(map_);
  return map_ != nullptr && a >= base && n <= map_size_ && a - base <= map_size_ - n;
}

void TensorSet::drop_resident(const void* data, size_t n) const {
  const bool mapped = std::any_of(files_.begin(), files_.end(), [&](const auto& f) { return f->maps(data, n); });
  LP_CHECK(mapped, "drop_resident: range is not inside a file mapping of this set");
  constexpr uintptr_t kPage = 4096;
  const auto a = reinterpret_cast<uintptr_t>(data);
  const uintptr_t lo = round_up(a, kPage), hi = (a + n) / kPage * kPage;  // whole pages only
  if (lo < hi) (void)::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

size_t TensorSet::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : by_name_) n += t->nbytes;
  for (const auto& [name, t] : i32_by_name_) n += t->nbytes;
  return n;
}

// ---- SafetensorsWriter ----

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            const void* data) {
  add_entry(name, dtype_name(dtype), dtype_size(dtype), std::move(shape), data);
}

void SafetensorsWriter::add_i32(const std::string& name, std::vector<int64_t> shape, const int32_t* data) {
  add_entry(name, "I32", 4, std::move(shape), data);
}

void SafetensorsWriter::add_entry(const std::string& name, std::string_view dtype, size_t elem_size,
                                  std::vector<int64_t> shape, const void* data) {
  LP_CHECK(name != "__metadata__", "tensor name __metadata__ is reserved");
  for (const auto& e : entries_) LP_CHECK(e.name != name, "tensor {} added twice", name);
  int64_t numel = 1;
  for (int64_t d : shape) {
    LP_CHECK(d >= 0, "negative dimension in shape of {}", name);
    numel *= d;
  }
  LP_CHECK(data != nullptr || numel == 0, "tensor {} has no data", name);
  entries_.push_back(Entry{name, dtype, elem_size, std::move(shape), data});
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::write(const fs::path& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  std::vector<size_t> sizes;
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    size_t n = e.elem_size;
    for (int64_t d : e.shape) n *= static_cast<size_t>(d);
    sizes.push_back(n);
    header[e.name] = {{"dtype", std::string(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text;
  try {
    text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    fail("cannot write {}: {}", path.string(), e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t len = text.size();
  char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>(len >> (8 * i) & 0xff);

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create {}: {}", path.string(), std::strerror(errno));
  out.write(len_bytes, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (sizes[i])
      out.write(static_cast<const char*>(entries_[i].data), static_cast<std::streamsize>(sizes[i]));
  }
  out.flush();
  if (!out) fail("cannot write {}: {}", path.string(), std::strerror(errno));
}

}  // namespace lp::io
