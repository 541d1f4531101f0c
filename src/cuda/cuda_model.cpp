// PLACEHOLDER for the helpers' base commit only: replaced by the real CudaModel before anything lands.
#include "cuda/cuda_model.h"

#include "core/check.h"

namespace lp::cuda {

std::unique_ptr<CudaModel> CudaModel::load(const std::filesystem::path&, const model::LoadOptions&, int) {
  throw Error("CudaModel is not implemented yet");
}

}  // namespace lp::cuda
