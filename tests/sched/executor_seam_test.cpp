// The backend seam (model/executor.h) on the CPU. A test executor keeps the KV cache and the adapter slots in
// "device" memory: host memory behind lp::DeviceMemory whose copies are only queued, and applied when the
// next step starts, as a GPU's copy stream delivers them (and reading the source only then, so a source freed
// or changed too early shows up). Through it, the slot bank's device layout, the manager's slot moves and the
// engine must give exactly what the CPU Model gives with host storage: the same slot bytes, the same tokens.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "core/device_memory.h"
#include "lora/adapter.h"
#include "lora/adapter_manager.h"
#include "lora/slot_bank.h"
#include "model/model.h"
#include "sched/engine.h"
#include "util/engine_util.h"

namespace lp::sched {
namespace {

class DeferredMemory : public DeviceMemory {
 public:
  std::shared_ptr<void> allocate(size_t bytes) override {
    void* p = std::calloc(1, bytes == 0 ? 1 : bytes);
    LP_CHECK(p != nullptr);
    allocated_ += bytes;
    return {p, [](void* q) { std::free(q); }};
  }
  void copy_to_device(void* dst, const void* src, size_t bytes) override {
    queue_.push_back({static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), bytes});
  }
  void fill_zero(void* dst, size_t bytes) override { queue_.push_back({static_cast<uint8_t*>(dst), nullptr, bytes}); }
  std::shared_ptr<void> pin_host(const void* p, size_t bytes) override {
    ++pins_;
    const auto* b = static_cast<const uint8_t*>(p);
    return {reinterpret_cast<void*>(1), [this, b, bytes](void*) {
              ++unpins_;
              // A device would still be reading a queued copy from this memory: the host tier must not let
              // an adapter go before the step that reads its copies has started.
              for (const Op& op : queue_)
                if (op.src != nullptr && op.src < b + bytes && b < op.src + op.bytes)
                  ADD_FAILURE() << "pinned memory released while a copy from it is still queued";
            }};
  }
  // What the device's compute stream waits for before a step.
  void flush() {
    for (const Op& op : queue_) {
      if (op.src != nullptr)
        std::memcpy(op.dst, op.src, op.bytes);
      else
        std::memset(op.dst, 0, op.bytes);
    }
    queue_.clear();
  }
  size_t queued() const { return queue_.size(); }
  size_t allocated() const { return allocated_; }
  int pins() const { return pins_; }
  int unpins() const { return unpins_; }

 private:
  struct Op {
    uint8_t* dst;
    const uint8_t* src;  // null: zero
    size_t bytes;
  };
  std::vector<Op> queue_;
  size_t allocated_ = 0;
  int pins_ = 0, unpins_ = 0;
};

// The CPU forward over storage that lives behind DeferredMemory.
class DeferredExecutor : public model::Executor {
 public:
  explicit DeferredExecutor(std::unique_ptr<model::Model> m) : model_(std::move(m)) {}
  model::Device device() const override { return model_->device(); }
  std::string describe() const override { return "cpu with deferred-copy storage (test)"; }
  const model::ModelConfig& config() const override { return model_->config(); }
  const model::ModelWeights& weights() const override { return model_->weights(); }
  std::unique_ptr<kv::KvCache> make_kv_cache(const kv::KvShape& shape, int num_blocks) override {
    auto c = std::make_unique<kv::KvCache>(shape, num_blocks, memory_);
    EXPECT_TRUE(c->on_device());
    return c;
  }
  DeviceMemory* slot_memory() override { return &memory_; }
  void forward(ComputePool& pool, const model::Batch& batch, kv::KvCache& cache, float* logits,
               const model::LoraBankView* lora) override {
    EXPECT_TRUE(cache.on_device()) << "the engine must use the executor's KV cache";
    memory_.flush();
    ++steps_;
    model_->forward(pool, batch, cache, logits, lora);
  }
  DeferredMemory& memory() { return memory_; }
  int steps() const { return steps_; }

 private:
  std::unique_ptr<model::Model> model_;
  DeferredMemory memory_;
  int steps_ = 0;
};

class ExecutorSeamTest : public test::DemoEngineTest {
 protected:
  static void SetUpTestSuite() { make_dir("seam", 3); }
  lora::PackedAdapter packed(const std::string& name, DeviceMemory* pin = nullptr) {
    return lora::pack_adapter(lora::load_adapter(dir_->adapter(name), lora::base_shapes(model_->config())),
                              DType::kBF16, pin);
  }
};

// Every slot byte, and every rank, where the forward reads them.
void expect_same_slots(const model::LoraBankView& host, const model::LoraBankView& dev, const char* when) {
  ASSERT_EQ(host.layers.size(), dev.layers.size());
  for (size_t l = 0; l < host.layers.size(); ++l)
    for (int p = 0; p < model::kNumProj; ++p) {
      const kernels::LoraWeights& h = host.layers[l][p];
      const kernels::LoraWeights& d = dev.layers[l][p];
      ASSERT_EQ(h.a == nullptr, d.a == nullptr);
      if (h.a == nullptr) continue;
      ASSERT_NE(h.a, d.a);
      const size_t es = dtype_size(h.dtype);
      const size_t a_bytes = static_cast<size_t>(h.max_loras) * h.max_rank * h.in * es;
      const size_t b_bytes = static_cast<size_t>(h.max_loras) * h.max_rank * h.out * es;
      EXPECT_EQ(0, std::memcmp(h.a, d.a, a_bytes)) << when << ": A of layer " << l << " proj " << p;
      EXPECT_EQ(0, std::memcmp(h.b, d.b, b_bytes)) << when << ": Bt of layer " << l << " proj " << p;
      EXPECT_EQ(0, std::memcmp(h.ranks, d.ranks, h.max_loras * sizeof(int32_t)))
          << when << ": ranks of layer " << l << " proj " << p;
    }
}

// A bank in device memory holds, after its queued copies, exactly the bytes of a host bank given the same
// loads — also after a slot is cleared and reloaded with another adapter (stale rows must be zeroed) — and
// nothing of a load is visible before the copies run.
TEST_F(ExecutorSeamTest, SlotBankInDeviceMemoryHoldsTheHostBanksBytes) {
  DeferredMemory mem;
  const auto& c = model_->config();
  lora::SlotBank host(c, 3, 16, DType::kBF16);
  lora::SlotBank dev(c, 3, 16, DType::kBF16, lora::kAllModules, &mem);
  EXPECT_EQ(host.bytes(), dev.bytes());
  EXPECT_GE(mem.allocated(), dev.bytes());
  EXPECT_EQ(mem.pins(), 1) << "the bank's ranks, published with one DMA";
  lora::PackedAdapter a0 = packed("a0", &mem), a1 = packed("a1", &mem), a2 = packed("a2", &mem);
  EXPECT_EQ(mem.pins() - 1, static_cast<int>(2 * (a0.modules.size() + a1.modules.size() + a2.modules.size())));
  for (lora::SlotBank* b : {&host, &dev}) {
    b->load(0, a0);
    b->load(2, a1);
  }
  ASSERT_GT(mem.queued(), 0u);
  bool any_rank = false;  // before the copies run, the device still says "no adapter" everywhere
  for (const auto& layer : dev.view().layers)
    for (const auto& w : layer)
      if (w.a != nullptr)
        for (int s = 0; s < w.max_loras; ++s) any_rank |= w.ranks[s] != 0;
  EXPECT_FALSE(any_rank);
  mem.flush();
  expect_same_slots(host.view(), dev.view(), "after two loads");
  for (lora::SlotBank* b : {&host, &dev}) {
    b->clear(0);
    b->load(0, a2);  // where a2 has a lower rank or no module, a0's rows must not survive
    b->clear(2);
  }
  mem.flush();
  expect_same_slots(host.view(), dev.view(), "after clear and reload");
  {
    lora::PackedAdapter gone = packed("a1", &mem);
    dev.load(1, gone);
    mem.flush();  // the step that reads the copies starts before the host tier may drop the adapter
  }
  EXPECT_EQ(mem.unpins(), static_cast<int>(2 * a1.modules.size()));
}

// The engine, the adapter manager and the runner use only the executor's storage: on the deferred-copy
// executor (KV cache and slots behind DeviceMemory, slots moved by the manager while other requests run)
// every request gets exactly the tokens it gets on the plain CPU Model.
TEST_F(ExecutorSeamTest, EngineOnDeviceStorageGivesTheSameTokens) {
  struct Job {
    std::vector<int32_t> prompt;
    int n;
    std::string adapter;
  };
  const std::vector<Job> jobs = {{prompt(21, 1), 12, "a0"}, {prompt(5, 2), 9, ""},   {prompt(40, 3), 7, "a1"},
                                 {prompt(9, 4), 11, "a2"},  {prompt(33, 5), 6, "a0"}, {prompt(17, 6), 10, "a1"}};
  auto run = [&](model::Executor& exec) {
    // Two slots for three adapters: requests wait for slots and the manager moves adapters in and out.
    lora::ManagerOptions o = test::DemoModelDir::manager_options(2, 3);
    o.slot_memory = exec.slot_memory();
    auto mgr = std::make_unique<lora::AdapterManager>(exec.config(), o);
    dir_->register_adapters(*mgr, 3);
    EngineConfig cfg;
    cfg.kv_cache_tokens = 1024;
    Engine engine(exec, *tok_, mgr.get(), cfg);
    engine.start();
    std::vector<std::shared_ptr<RequestChannel>> chans;
    for (const Job& j : jobs) chans.push_back(engine.submit(greedy(j.prompt, j.n, j.adapter)));
    std::vector<std::vector<int32_t>> out;
    for (auto& ch : chans) {
      Result r = collect(ch);
      EXPECT_EQ(r.finish, FinishReason::kLength) << r.error;
      out.push_back(r.tokens);
    }
    engine.shutdown(std::chrono::seconds(5));
    return out;
  };
  const auto on_host = run(*model_);
  DeferredExecutor dev(model::Model::load(dir_->path()));
  const auto on_dev = run(dev);
  EXPECT_GT(dev.steps(), 0);
  EXPECT_EQ(dev.memory().queued(), 0u) << "copies queued after the last step were never needed";
  ASSERT_EQ(on_host.size(), on_dev.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(on_host[i].size(), static_cast<size_t>(jobs[i].n));
    EXPECT_EQ(on_host[i], on_dev[i]) << "request " << i << " (adapter '" << jobs[i].adapter << "')";
  }
}

}  // namespace
}  // namespace lp::sched
