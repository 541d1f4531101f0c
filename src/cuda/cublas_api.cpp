#include "cuda/cublas_api.h"

#include <dlfcn.h>

#include <mutex>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "core/check.h"

namespace lp::cuda {

namespace {

// The library by its soname (the loader's search: LD_LIBRARY_PATH, ld.so.cache), else in the toolkit's
// library folder this build was configured with.
void* open_library(const std::string& soname) {
  if (void* h = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  const char* e0 = dlerror();
  const std::string first = e0 ? e0 : "";
#ifdef LP_CUDA_LIBRARY_DIR
  const std::string path = std::string(LP_CUDA_LIBRARY_DIR) + "/" + soname;
  if (void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  const char* e = dlerror();
  fail("cannot load {} (needed by --device cuda): {}; nor {}: {}", soname, first, path, e ? e : "");
#else
  fail("cannot load {} (needed by --device cuda): {}", soname, first);
#endif
}

CublasApi load() {
  void* blas = open_library(fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR));
  void* lt = open_library(fmt::format("libcublasLt.so.{}", CUBLAS_VER_MAJOR));
  CublasApi api;
  auto resolve = [&](const char* name) {
    dlerror();
    void* f = dlsym(std::string_view(name).starts_with("cublasLt") ? lt : blas, name);
    const char* e = f == nullptr ? dlerror() : nullptr;
    if (f == nullptr) fail("cuBLAS: {} not found in the loaded library ({})", name, e ? e : "");
    return f;
  };
#define LP_CUBLAS_RESOLVE(name) api.name = reinterpret_cast<decltype(api.name)>(resolve(#name));
  LP_CUBLAS_FUNCTIONS(LP_CUBLAS_RESOLVE)
  LP_CUBLAS_RESOLVE(cublasGemmEx)
#undef LP_CUBLAS_RESOLVE
  return api;  // the libraries stay loaded for the life of the process
}

}  // namespace

cudaDataType_t cuda_data_type(DType t) {
  switch (t) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
  }
  LP_CHECK(false, "unknown dtype");
  return CUDA_R_32F;
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS: {} failed: {} ({})", what, cublas_api().cublasGetStatusName(s),
         cublas_api().cublasGetStatusString(s));
}

const CublasApi& cublas_api() {
  static std::once_flag once;
  static CublasApi api;
  std::call_once(once, [] { api = load(); });  // a throw leaves the flag unset: the next call tries again
  return api;
}

}  // namespace lp::cuda
