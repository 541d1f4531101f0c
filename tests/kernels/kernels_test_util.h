// Helpers for the kernel tests: the ISA tables this CPU can run, random inputs, weights in each dtype,
// and element-wise comparison against a per-element tolerance (so a test can report the worst element).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <random>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace lp::kernels::test {

constexpr double kF32Eps = 1.0 / (1 << 24);  // unit roundoff of f32 (half an ulp at 1)
constexpr double kBf16Eps = 1.0 / (1 << 8);  // unit roundoff of bf16 (8 significant bits)

// Every ISA table this CPU supports (scalar first).
inline std::vector<const detail::IsaKernels*> cpu_isas() {
  std::vector<const detail::IsaKernels*> out;
  for (detail::Isa i : detail::supported_isas()) out.push_back(&detail::kernels_for(i));
  return out;
}

inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// n bytes that end exactly where an inaccessible page begins: any read past the end faults, including the
// masked vector loads that AddressSanitizer does not instrument.
class GuardedBytes {
 public:
  explicit GuardedBytes(size_t n) : n_(n) {
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    len_ = (n + page - 1) / page * page + page;
    void* p = ::mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    base_ = static_cast<uint8_t*>(p);
    ::mprotect(base_ + len_ - page, page, PROT_NONE);
    data_ = base_ + len_ - page - n;
  }
  ~GuardedBytes() {
    if (base_) ::munmap(base_, len_);
  }
  GuardedBytes(GuardedBytes&& o) noexcept : n_(o.n_), len_(o.len_), base_(o.base_), data_(o.data_) {
    o.base_ = nullptr;
  }
  GuardedBytes& operator=(GuardedBytes&&) = delete;
  GuardedBytes(const GuardedBytes&) = delete;
  GuardedBytes& operator=(const GuardedBytes&) = delete;
  uint8_t* data() { return data_; }
  size_t size() const { return n_; }

 private:
  size_t n_, len_;
  uint8_t* base_;
  uint8_t* data_;
};

// A (rows, cols) matrix stored in `dtype` with row_stride >= cols (the padding holds NaN, which a kernel
// reading past a row's end would propagate). It ends exactly at a guard page, so a read past the end of W
// crashes the test.
struct TestMatrix {
  GuardedBytes bytes;
  MatView view;

  TestMatrix(DType dtype, int64_t rows, int64_t cols, int64_t stride, std::mt19937& rng, float scale = 1.f)
      : bytes(static_cast<size_t>(std::max<int64_t>(rows * stride, 1)) * dtype_size(dtype)) {
    view = MatView{nullptr, dtype, rows, cols, stride};
    std::uniform_real_distribution<float> d(-scale, scale);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < stride; ++c) set(r, c, c < cols ? d(rng) : NAN);
    view.data = bytes.data();
  }
  void set(int64_t r, int64_t c, float v) {
    int64_t i = r * view.row_stride + c;
    if (view.dtype == DType::kF32) {
      std::memcpy(bytes.data() + i * 4, &v, 4);
    } else {
      uint16_t h = view.dtype == DType::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
      std::memcpy(bytes.data() + i * 2, &h, 2);
    }
  }
};

// Counts elements with |got - want| > tol[i] and reports the worst few through gtest (as a failure only
// when `report` is true; tests that must detect a wrong result pass false and check the count).
inline int64_t count_outside(const float* got, const float* want, const std::vector<double>& tol, size_t n,
                             bool report = true) {
  int64_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= tol[i])) {
      if (report && bad < 5)
        ADD_FAILURE() << "element " << i << ": got " << got[i] << " want " << want[i] << " err " << err
                      << " tol " << tol[i];
      ++bad;
    }
  }
  return bad;
}

inline bool same_bits(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * 4) == 0;
}

}  // namespace lp::kernels::test
