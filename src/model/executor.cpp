#include "model/executor.h"

namespace lp::model {

const char* device_name(Device d) { return d == Device::kCuda ? "cuda" : "cpu"; }

kv::KvShape Executor::kv_shape(int block_size, std::optional<DType> dtype) const {
  const ModelConfig& c = config();
  return kv::KvShape{c.n_layers, c.n_kv_heads, c.head_dim, block_size, dtype.value_or(c.torch_dtype)};
}

}  // namespace lp::model
