#include "cuda/device.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

namespace lp::cuda {

bool built_with_cuda() { return true; }

bool probe_device(int index, DeviceInfo* info, std::string* why) {
  auto fail = [&](std::string msg) {
    if (why) *why = std::move(msg);
    return false;
  };
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return fail(fmt::format("no usable CUDA device: {} ({})", cudaGetErrorString(e), cudaGetErrorName(e)));
  if (n == 0) return fail("no CUDA device found (the driver loaded but reports 0 devices)");
  if (index < 0 || index >= n) return fail(fmt::format("CUDA device {} does not exist ({} found)", index, n));
  cudaDeviceProp p{};
  if ((e = cudaGetDeviceProperties(&p, index)) != cudaSuccess)
    return fail(fmt::format("CUDA device {}: {}", index, cudaGetErrorString(e)));
  if ((e = cudaSetDevice(index)) != cudaSuccess)
    return fail(fmt::format("CUDA device {}: {}", index, cudaGetErrorString(e)));
  size_t free_b = 0, total_b = 0;
  if ((e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess)  // creates the context: fails if it cannot
    return fail(fmt::format("CUDA device {} ({}): {}", index, p.name, cudaGetErrorString(e)));
  if (p.major < 8)
    return fail(fmt::format("CUDA device {} ({}) has compute capability {}.{}; the backend needs 8.0 or newer "
                            "(BF16 tensor cores)", index, p.name, p.major, p.minor));
  if (info) {
    info->index = index;
    info->name = p.name;
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->multiprocessors = p.multiProcessorCount;
    info->total_bytes = static_cast<int64_t>(total_b);
    info->free_bytes = static_cast<int64_t>(free_b);
    info->l2_bytes = p.l2CacheSize;
  }
  return true;
}

}  // namespace lp::cuda
