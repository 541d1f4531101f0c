// device.h in a build without the CUDA backend (LP_CUDA=OFF, e.g. no nvcc at configure time).
#include "cuda/device.h"

namespace lp::cuda {

bool built_with_cuda() { return false; }

bool probe_device(int, DeviceInfo*, std::string* why) {
  if (why) *why = "this loraplex was built without the CUDA backend (LP_CUDA=OFF: nvcc was not found at configure time)";
  return false;
}

}  // namespace lp::cuda
