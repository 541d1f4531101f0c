// What the CUDA backend needs to know before it starts: whether a device is usable, and what it is. Built in
// every configuration: without LP_CUDA (no nvcc) these answer "this build has no CUDA backend", so the CLI's
// `--device cuda` message and `--device auto` never need #ifdefs.
#pragma once

#include <cstdint>
#include <string>

namespace lp::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;            // "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
  int64_t total_bytes = 0;     // device memory
  int64_t free_bytes = 0;      // free when probed
  int64_t l2_bytes = 0;
};

// Whether this build has the CUDA backend (LP_CUDA).
bool built_with_cuda();

// True and fills *info when device `index` is usable (the build has the backend, a driver loads, the device
// exists and a context can be created on it); false with *why naming what is missing otherwise.
bool probe_device(int index, DeviceInfo* info, std::string* why);

}  // namespace lp::cuda
