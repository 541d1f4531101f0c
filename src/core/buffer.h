// Aligned, owned, uninitialized-by-default memory. Copying is explicit (clone()) so that the cost of
// duplicating a large buffer is visible at the call site.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <sys/mman.h>

#include "core/check.h"

namespace lp {

inline constexpr size_t kAlign = 64;  // cache line; also the AVX-512 vector size
inline constexpr size_t kPage = 4096;

// Buffers of kHugeMin bytes or more (weights copied for streaming, the KV cache, the bandwidth probe) start
// on a 2 MiB boundary and ask for transparent huge pages: a stream through 4 KiB pages takes a TLB miss
// and a page walk every 64 lines, which cost 6-10% of a batch-1 decode step on this machine. Where THP is
// off ("never"), this is a no-op and the buffer simply has 4 KiB pages.
inline constexpr size_t kHugePage = size_t{2} << 20;
inline constexpr size_t kHugeMin = size_t{4} << 20;

// n rounded up to a multiple of m (m > 0).
inline constexpr size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { resize(n); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      std::free(p_);
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~Buffer() { std::free(p_); }

  // Reallocates when the size changes; contents are not preserved. `align` (a power of two >= kAlign) asks
  // for more: kPage gives the buffer whole pages of its own (memory page-locked for DMA must not share a
  // page with another buffer, whose own registration would then overlap it).
  void resize(size_t n, size_t align = kAlign) {
    if (n == n_) return;
    std::free(p_);
    p_ = nullptr;
    n_ = n;
    if (n == 0) return;
    LP_CHECK(align >= kAlign && (align & (align - 1)) == 0, "alignment {}", align);
    size_t bytes = round_up(n * sizeof(T), align);
    const bool huge = bytes >= kHugeMin;
    if (huge) bytes = round_up(bytes, kHugePage);
    p_ = static_cast<T*>(std::aligned_alloc(huge ? std::max(kHugePage, align) : align, bytes));
    LP_CHECK(p_ != nullptr, "out of memory allocating {} bytes", bytes);
    if (huge) (void)::madvise(p_, bytes, MADV_HUGEPAGE);  // advice only: failure leaves ordinary pages
  }
  void zero() {
    if (n_) std::memset(static_cast<void*>(p_), 0, n_ * sizeof(T));
  }
  Buffer clone() const {
    Buffer b(n_);
    if (n_) std::memcpy(static_cast<void*>(b.p_), p_, n_ * sizeof(T));
    return b;
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }
  T* begin() { return p_; }
  T* end() { return p_ + n_; }
  const T* begin() const { return p_; }
  const T* end() const { return p_ + n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace lp
