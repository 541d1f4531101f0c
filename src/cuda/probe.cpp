#include "cuda/probe.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "core/check.h"
#include "core/stats.h"
#include "cuda/check.h"
#include "cuda/cublas_api.h"

namespace lp::cuda {

namespace {

// Owners of the probe's CUDA objects, so an error thrown half-way frees what was made (the destructors
// ignore errors: the one already thrown is the one to report).
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    check_cuda(cudaMalloc(&p, bytes), fmt::format("cudaMalloc({} bytes)", bytes).c_str());
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { check_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() { cudaStreamDestroy(s); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};
struct Event {
  cudaEvent_t e = nullptr;
  Event() { check_cuda(cudaEventCreate(&e), "cudaEventCreate"); }
  ~Event() { cudaEventDestroy(e); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};
struct Blas {
  cublasHandle_t h = nullptr;
  Blas() { check_cublas(cublas_api().cublasCreate_v2(&h), "cublasCreate"); }
  ~Blas() { cublas_api().cublasDestroy_v2(h); }
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
};

// Fills `bytes` of device memory at `dst` with random elements of `dtype` in [-1, 1): one random block made
// on the host, copied and then repeated on the device (never zeros, which some units process faster).
void fill_random(void* dst, size_t bytes, DType dtype, uint64_t seed) {
  const size_t es = dtype_size(dtype);
  LP_CHECK(bytes % es == 0, "fill of {} bytes is not whole {}-byte elements", bytes, es);
  const size_t block = std::min(bytes, size_t{16} << 20);
  std::vector<float> vals(block / es);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : vals) v = u(rng);
  std::vector<uint8_t> host(block);
  from_f32(dtype, vals.data(), host.data(), vals.size());
  check_cuda(cudaMemcpy(dst, host.data(), block, cudaMemcpyHostToDevice), "cudaMemcpy (probe fill)");
  for (size_t off = block; off < bytes; off += block)
    check_cuda(cudaMemcpy(static_cast<uint8_t*>(dst) + off, dst, std::min(block, bytes - off),
                           cudaMemcpyDeviceToDevice),
                "cudaMemcpy (probe fill)");
}

// Times `op` (which enqueues its work on `stream`) with events: `warmup` untimed runs, then `repeats`
// samples of `inner` back-to-back runs each; returns the seconds of one run per sample.
template <class Op>
std::vector<double> time_on_stream(cudaStream_t stream, int warmup, int repeats, int inner, Op op) {
  Event start, stop;
  for (int i = 0; i < warmup; ++i) op();
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize (warm-up)");
  std::vector<double> secs;
  for (int r = 0; r < repeats; ++r) {
    check_cuda(cudaEventRecord(start.e, stream), "cudaEventRecord");
    for (int i = 0; i < inner; ++i) op();
    check_cuda(cudaEventRecord(stop.e, stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop.e), "cudaEventSynchronize");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, start.e, stop.e), "cudaEventElapsedTime");
    LP_CHECK(ms > 0, "an event pair measured {} ms", ms);
    secs.push_back(static_cast<double>(ms) * 1e-3 / inner);
  }
  return secs;
}

}  // namespace

ProbeResult measure_d2d_bandwidth(size_t bytes, int repeats) {
  if (bytes == 0 || repeats < 1) fail("measure_d2d_bandwidth: bytes and repeats must be positive");
  bytes = (bytes + 15) / 16 * 16;
  DeviceBuffer src(bytes), dst(bytes);
  fill_random(src.p, bytes, DType::kF32, 1);
  Stream stream;
  auto copy = [&] {
    check_cuda(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, stream.s), "cudaMemcpyAsync D2D");
  };
  ProbeResult r;
  for (double s : time_on_stream(stream.s, 2, repeats, 4, copy))
    r.samples.push_back(2.0 * static_cast<double>(bytes) / s);
  r.median = median(r.samples);
  return r;
}

ProbeResult measure_gemm_tflops(int64_t M, int64_t N, int64_t K, DType dtype, int repeats) {
  if (M < 1 || N < 1 || K < 1 || repeats < 1) fail("measure_gemm_tflops: M, N, K and repeats must be positive");
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) fail("measure_gemm_tflops: a dimension exceeds int32");
  const size_t es = dtype_size(dtype);
  DeviceBuffer a(static_cast<size_t>(M * K) * es), b(static_cast<size_t>(K * N) * es),
      d(static_cast<size_t>(M * N) * es);
  fill_random(a.p, static_cast<size_t>(M * K) * es, dtype, 2);
  fill_random(b.p, static_cast<size_t>(K * N) * es, dtype, 3);
  Stream stream;
  Blas blas;
  check_cublas(cublas_api().cublasSetStream_v2(blas.h, stream.s), "cublasSetStream");
  const float alpha = 1.f, beta = 0.f;
  const cudaDataType_t t = cuda_data_type(dtype);
  // Column-major: A is (M, K) with lda = M, B (K, N) with ldb = K, D (M, N) with ldd = M.
  auto gemm = [&] {
    check_cublas(cublas_api().cublasGemmEx(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(M), static_cast<int>(N),
                            static_cast<int>(K), &alpha, a.p, t, static_cast<int>(M), b.p, t,
                            static_cast<int>(K), &beta, d.p, t, static_cast<int>(M), CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
  };
  ProbeResult r;
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  for (double s : time_on_stream(stream.s, 3, repeats, 1, gemm)) r.samples.push_back(flops / s / 1e12);
  r.median = median(r.samples);
  return r;
}

void device_synchronize() { check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

}  // namespace lp::cuda
