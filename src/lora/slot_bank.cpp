#include "lora/slot_bank.h"

#include <cstring>

#include "core/check.h"
#include "model/weights.h"

namespace lp::lora {

size_t PackedAdapter::bytes() const {
  size_t n = 0;
  for (const auto& m : modules) n += m.a.size() + m.b.size();
  return n;
}

PackedAdapter pack_adapter(const LoraAdapter& adapter, DType dtype, DeviceMemory* pin) {
  PackedAdapter p;
  p.dtype = dtype;
  const size_t es = dtype_size(dtype);
  std::vector<float> tmp;
  for (const LoraWeights& w : adapter.weights) {
    PackedModule m;
    m.layer = w.layer;
    m.module = w.module;
    m.rank = w.rank;
    // Buffers to be page-locked get pages of their own (their registrations must not overlap).
    const size_t align = pin != nullptr ? kPage : kAlign;
    m.a.resize(w.a.size() * es, align);
    from_f32(dtype, w.a.data(), m.a.data(), w.a.size());
    // lora_B is (out, rank): store it transposed, (rank, out), with the scale folded in.
    tmp.resize(w.b.size());
    for (int64_t n = 0; n < w.out; ++n)
      for (int j = 0; j < w.rank; ++j) tmp[static_cast<size_t>(j) * w.out + n] = w.b[n * w.rank + j] * w.scale;
    m.b.resize(tmp.size() * es, align);
    from_f32(dtype, tmp.data(), m.b.data(), tmp.size());
    p.max_rank = std::max(p.max_rank, w.rank);
    p.modules.push_back(std::move(m));
  }
  if (pin != nullptr)
    for (const PackedModule& m : p.modules)
      for (const Buffer<uint8_t>* b : {&m.a, &m.b}) {
        if (b->size() == 0) continue;
        if (auto h = pin->pin_host(b->data(), b->size())) p.pins.push_back(std::move(h));
      }
  return p;
}

BaseShapes base_shapes(const model::ModelConfig& c) {
  BaseShapes s;
  s.n_layers = c.n_layers;
  for (int i = 0; i < kNumModules; ++i) {
    auto [in, out] = model::proj_shape(c, static_cast<model::Proj>(i));
    s.dims[i] = {in, out};
  }
  return s;
}

int64_t module_slot_bytes(const model::ModelConfig& c, Module m, int max_rank, DType dtype) {
  auto [in, out] = model::proj_shape(c, m);
  return int64_t{c.n_layers} * max_rank * (int64_t{in} + out) * static_cast<int64_t>(dtype_size(dtype));
}

size_t slot_bytes(const model::ModelConfig& c, int max_rank, DType dtype, const ModuleSet& modules) {
  int64_t n = 0;
  for (int i = 0; i < kNumModules; ++i)
    if (modules[i]) n += module_slot_bytes(c, static_cast<Module>(i), max_rank, dtype);
  return static_cast<size_t>(n);
}

SlotBank::SlotBank(const model::ModelConfig& c, int max_loras, int max_rank, DType dtype, const ModuleSet& modules,
                   DeviceMemory* memory)
    : n_layers_(c.n_layers), max_loras_(max_loras), max_rank_(max_rank), dtype_(dtype), modules_(modules),
      memory_(memory) {
  LP_CHECK(max_loras > 0 && max_rank > 0, "max_loras {} max_rank {}", max_loras, max_rank);
  parts_.resize(static_cast<size_t>(n_layers_) * kNumModules);
  // Every part's ranks side by side, so a device bank publishes them all with one copy (page-locked: the copy
  // is a DMA that never waits for the copies queued before it).
  ranks_.resize(parts_.size() * max_loras, memory_ != nullptr ? kPage : kAlign);
  ranks_.zero();
  if (memory_ != nullptr) ranks_pin_ = memory_->pin_host(ranks_.data(), ranks_.size() * sizeof(int32_t));
  view_.layers.resize(n_layers_);
  for (int l = 0; l < n_layers_; ++l) {
    for (int i = 0; i < kNumModules; ++i) {
      if (!modules[i]) continue;
      Part& p = part(l, static_cast<Module>(i));
      auto [in, out] = model::proj_shape(c, static_cast<model::Proj>(i));
      p.in = in;
      p.out = out;
      p.ranks = ranks_.data() + (&p - parts_.data()) * max_loras;
      bytes_ += a_bytes(p) + b_bytes(p);
      if (memory_ != nullptr) continue;  // placed below, in one device allocation
      p.a.resize(a_bytes(p));
      p.b.resize(b_bytes(p));
      p.a.zero();  // also makes the pages resident now, not at the first load
      p.b.zero();
      p.a_data = p.a.data();
      p.b_data = p.b.data();
      p.ranks_data = p.ranks;
    }
  }
  if (memory_ != nullptr) place_on_device();
  for (int l = 0; l < n_layers_; ++l)
    for (int i = 0; i < kNumModules; ++i) {
      if (!modules[i]) continue;
      const Part& p = part(l, static_cast<Module>(i));
      view_.layers[l][i] =
          kernels::LoraWeights{p.a_data, p.b_data, dtype, max_loras, max_rank, p.in, p.out, p.ranks_data};
    }
}

// Device slots: every part's A and Bt, then all the ranks, in one zeroed allocation (each piece 256-byte
// aligned, as cudaMalloc would align it), so the bank costs one allocation however many layers and modules.
void SlotBank::place_on_device() {
  constexpr size_t kAlignDev = 256;
  std::vector<size_t> offsets;  // A, Bt of each part in use
  size_t total = 0;
  for (const Part& p : parts_) {
    if (p.ranks == nullptr) continue;
    offsets.push_back(total);
    total += round_up(a_bytes(p), kAlignDev);
    offsets.push_back(total);
    total += round_up(b_bytes(p), kAlignDev);
  }
  const size_t ranks_off = total;
  device_ = memory_->allocate(total + ranks_.size() * sizeof(int32_t));
  auto* base = static_cast<uint8_t*>(device_.get());
  ranks_dev_ = reinterpret_cast<int32_t*>(base + ranks_off);
  size_t k = 0;
  for (Part& p : parts_) {
    if (p.ranks == nullptr) continue;
    p.a_data = base + offsets[k++];
    p.b_data = base + offsets[k++];
    p.ranks_data = ranks_dev_ + (p.ranks - ranks_.data());
  }
}

void SlotBank::publish_ranks() {
  if (memory_ != nullptr) memory_->copy_to_device(ranks_dev_, ranks_.data(), ranks_.size() * sizeof(int32_t));
}

void SlotBank::check_fits(const PackedAdapter& a) const {
  if (a.dtype != dtype_)
    fail("adapter packed as {} but the slots hold {}", dtype_name(a.dtype), dtype_name(dtype_));
  for (const PackedModule& m : a.modules) {
    if (m.rank > max_rank_) fail("adapter rank {} exceeds --max-lora-rank {}", m.rank, max_rank_);
    if (m.layer < 0 || m.layer >= n_layers_) fail("adapter layer {} out of range", m.layer);
    if (!modules_[static_cast<int>(m.module)])
      fail("adapter targets {}, which has no LoRA slot memory (not in --lora-target-modules)",
           module_name(m.module));
  }
}

void SlotBank::clear_ranks(int slot) {
  LP_CHECK(slot >= 0 && slot < max_loras_, "slot {} out of range", slot);
  for (Part& p : parts_)
    if (p.ranks != nullptr) p.ranks[slot] = 0;
}

void SlotBank::clear(int slot) {
  clear_ranks(slot);
  publish_ranks();
}

void SlotBank::load(int slot, const PackedAdapter& a) {
  clear_ranks(slot);
  try {
    check_fits(a);
  } catch (...) {
    publish_ranks();  // the slot stays cleared, on the device too
    throw;
  }
  const size_t es = dtype_size(dtype_);
  for (const PackedModule& m : a.modules) {
    const Part& p = part(m.layer, m.module);
    // A: the adapter's rank rows, then zeros up to max_rank.
    uint8_t* a_dst = p.a_data + static_cast<size_t>(slot) * max_rank_ * p.in * es;
    const size_t a_pad = static_cast<size_t>(max_rank_ - m.rank) * p.in * es;
    // Bᵀ: the adapter's rank rows of length out, then zero rows up to max_rank.
    uint8_t* b_dst = p.b_data + static_cast<size_t>(slot) * max_rank_ * p.out * es;
    const size_t b_pad = static_cast<size_t>(max_rank_ - m.rank) * p.out * es;
    if (memory_ == nullptr) {
      std::memcpy(a_dst, m.a.data(), m.a.size());
      std::memset(a_dst + m.a.size(), 0, a_pad);
      std::memcpy(b_dst, m.b.data(), m.b.size());
      std::memset(b_dst + m.b.size(), 0, b_pad);
    } else {
      memory_->copy_to_device(a_dst, m.a.data(), m.a.size());
      if (a_pad > 0) memory_->fill_zero(a_dst + m.a.size(), a_pad);
      memory_->copy_to_device(b_dst, m.b.data(), m.b.size());
      if (b_pad > 0) memory_->fill_zero(b_dst + m.b.size(), b_pad);
    }
  }
  // Ranks last: a slot is adapted only once all its data is in place (on a device, the copies are ordered on
  // one stream, so the same holds there).
  for (const PackedModule& m : a.modules) part(m.layer, m.module).ranks[slot] = m.rank;
  publish_ranks();
}

}  // namespace lp::lora
