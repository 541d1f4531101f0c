// probe.h in a build without the CUDA backend (LP_CUDA=OFF): every probe says the backend is missing.
#include "core/check.h"
#include "cuda/device.h"
#include "cuda/probe.h"

namespace lp::cuda {

namespace {
[[noreturn]] void no_backend() {
  std::string why;
  probe_device(0, nullptr, &why);
  throw Error(why);
}
}  // namespace

ProbeResult measure_d2d_bandwidth(size_t, int) { no_backend(); }
ProbeResult measure_gemm_tflops(int64_t, int64_t, int64_t, DType, int) { no_backend(); }
void device_synchronize() { no_backend(); }

}  // namespace lp::cuda
