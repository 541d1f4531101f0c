// libFuzzer target: arbitrary bytes as a safetensors image. parse() must either accept (and then every
// tensor must lie inside the buffer) or throw lp::Error; anything else (crash, other exception, OOB read
// under ASan) is a bug. Seeds: fuzz/corpus/safetensors/.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/check.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = lp::io::SafetensorsFile::parse(data, size, "fuzz.safetensors");
    const auto* base = data;
    for (const auto& t : f->tensors()) {
      const auto* p = static_cast<const uint8_t*>(t.data);
      LP_CHECK(p >= base && p + t.nbytes <= base + size, "tensor {} outside the buffer", t.name);
      LP_CHECK(static_cast<size_t>(t.numel()) * lp::dtype_size(t.dtype) == t.nbytes, "size of {}", t.name);
      volatile uint8_t sink = 0;
      for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ p[i];  // touch every byte: ASan checks the range
      (void)t.shape_str();
      (void)f->find(t.name);
    }
    for (const auto& t : f->i32_tensors()) {  // packed int4 weights: read only through at()
      const auto* p = static_cast<const uint8_t*>(t.data);
      LP_CHECK(p >= base && p + t.nbytes <= base + size, "tensor {} outside the buffer", t.name);
      LP_CHECK(static_cast<size_t>(t.numel()) * 4 == t.nbytes, "size of {}", t.name);
      volatile int32_t sink = 0;
      for (int64_t i = 0; i < t.numel(); ++i) sink = sink ^ t.at(i);
      LP_CHECK(f->find_i32(t.name) == &t && f->find(t.name) == nullptr, "lookup of {}", t.name);
    }
  } catch (const lp::Error&) {
  }
  return 0;
}
