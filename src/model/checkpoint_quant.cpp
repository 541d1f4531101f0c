#include "model/checkpoint_quant.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/check.h"

namespace lp::model {

namespace {

const io::I32TensorInfo& need_i32(const io::TensorSet& ts, const std::string& name,
                                  const std::vector<int64_t>& shape) {
  const io::I32TensorInfo* t = ts.find_i32(name);
  if (!t) {
    if (const io::TensorInfo* f = ts.find(name))
      fail("tensor '{}' has dtype {}, expected I32 (packed int4) of shape {}", name, dtype_name(f->dtype),
           io::shape_str(shape));
    fail("missing tensor '{}' (expected I32 of shape {})", name, io::shape_str(shape));
  }
  if (t->shape != shape)
    fail("tensor '{}' has shape {}, expected {}", name, t->shape_str(), io::shape_str(shape));
  return *t;
}

const io::TensorInfo& need_scales(const io::TensorSet& ts, const std::string& name,
                                  const std::vector<int64_t>& shape) {
  const io::TensorInfo* t = ts.find(name);
  if (!t) {
    if (ts.find_i32(name)) fail("tensor '{}' has dtype I32, expected F16 scales", name);
    fail("missing tensor '{}' (expected F16 of shape {})", name, io::shape_str(shape));
  }
  if (t->dtype != DType::kF16)
    fail("tensor '{}' has dtype {}, expected F16 (the scales of an int4 checkpoint)", name,
         dtype_name(t->dtype));
  if (t->shape != shape)
    fail("tensor '{}' has shape {}, expected {}", name, t->shape_str(), io::shape_str(shape));
  return *t;
}

uint8_t nibble(int32_t v, int i) {
  return static_cast<uint8_t>((static_cast<uint32_t>(v) >> (4 * i)) & 0xF);
}

}  // namespace

int32_t kq4_group(int64_t in, int group_size) {
  const int64_t kp = kernels::quant_padded_cols(in);
  if (group_size == -1) return static_cast<int32_t>(kp);
  LP_CHECK(group_size > 0 && group_size % 64 == 0, "kq4_group: group_size {}", group_size);
  return kp % group_size == 0 ? group_size : 64;
}

kernels::QuantMatrix load_checkpoint_q4(const io::TensorSet& ts, const std::string& base, int64_t in,
                                        int64_t out, const CheckpointQuant& q) {
  const bool awq = q.method == "awq";
  LP_CHECK(awq || q.method == "gptq", "load_checkpoint_q4: method '{}'", q.method);
  LP_CHECK(in > 0 && out > 0, "load_checkpoint_q4: {} x {}", in, out);
  if (out % 8 != 0)
    fail("{}: {} output features are not a multiple of 8, which {} packs into one int32", base, out,
         q.method);
  if (!awq && in % 8 != 0)
    fail("{}: {} input features are not a multiple of 8, which GPTQ packs into one int32", base, in);
  const int64_t gs = q.group_size == -1 ? in : q.group_size;
  const int64_t n_groups = (in + gs - 1) / gs;
  const int64_t out8 = out / 8;

  const io::I32TensorInfo& qw =
      awq ? need_i32(ts, base + ".qweight", {in, out8}) : need_i32(ts, base + ".qweight", {in / 8, out});
  const io::I32TensorInfo& qz = need_i32(ts, base + ".qzeros", {n_groups, out8});
  const io::TensorInfo& sc = need_scales(ts, base + ".scales", {n_groups, out});

  // The checkpoint group of every input column.
  std::vector<int64_t> gidx(static_cast<size_t>(in));
  bool plain = true;  // gidx[k] == k / gs
  for (int64_t k = 0; k < in; ++k) gidx[k] = k / gs;
  if (const io::I32TensorInfo* gi = awq ? nullptr : ts.find_i32(base + ".g_idx")) {
    need_i32(ts, base + ".g_idx", {in});
    for (int64_t k = 0; k < in; ++k) {
      const int64_t g = gi->at(k);
      if (g < 0 || g >= n_groups)
        fail("tensor '{}.g_idx': input {} is in group {}, outside [0, {})", base, k, g, n_groups);
      plain = plain && g == gidx[k];
      gidx[k] = g;
    }
  } else if (!awq && ts.find(base + ".g_idx")) {
    need_i32(ts, base + ".g_idx", {in});  // throws: wrong dtype
  }
  int32_t group = kq4_group(in, q.group_size);
  if (!plain) {
    // kQ4 groups are contiguous columns. A g_idx that only renames the groups of whole 64-column blocks still
    // fits (group 64); one that mixes groups inside a block needs the activations permuted, which the
    // kernels do not do.
    for (int64_t k = 0; k < in; ++k)
      if (gidx[k] != gidx[k / 64 * 64])
        fail(
            "tensor '{}.g_idx': input {} is in group {} but input {} in group {}: desc_act with a permuted "
            "g_idx "
            "is not supported; re-export with desc_act=false",
            base, k, gidx[k], k / 64 * 64, gidx[k / 64 * 64]);
    group = 64;
  }

  kernels::QuantMatrix m = kernels::QuantMatrix::make_q4(out, in, group, DType::kF16);
  if (awq) {
    for (int64_t k = 0; k < in; ++k)
      for (int64_t j = 0; j < out8; ++j) {
        const int32_t v = qw.at(k * out8 + j);
        for (int i = 0; i < 8; ++i) m.set_q4(8 * j + kAwqOrder[i], k, nibble(v, i));
      }
  } else {
    for (int64_t i = 0; i < in / 8; ++i)
      for (int64_t n = 0; n < out; ++n) {
        const int32_t v = qw.at(i * out + n);
        for (int j = 0; j < 8; ++j) m.set_q4(n, 8 * i + j, nibble(v, j));
      }
  }

  int awq_slot[8];  // nibble holding column c of 8 (AWQ's inverse order)
  for (int i = 0; i < 8; ++i) awq_slot[kAwqOrder[i]] = i;
  const auto* scales = static_cast<const uint8_t*>(sc.data);
  const int64_t kq4_groups = kernels::quant_padded_cols(in) / group;
  for (int64_t n = 0; n < out; ++n)
    for (int64_t g = 0; g < kq4_groups; ++g) {
      const int64_t cg = gidx[std::min(g * group, in - 1)];
      const int32_t zv = qz.at(cg * out8 + n / 8);
      const int z = nibble(zv, awq ? awq_slot[n % 8] : static_cast<int>(n % 8)) + q.zero_offset();
      if (z > 15)
        fail(
            "tensor '{}.qzeros': zero point {} of output {} in group {} is outside the 4-bit range (a GPTQ "
            "v1 "
            "checkpoint stores zero - 1, so the nibble 15 cannot occur)",
            base, z, n, cg);
      uint16_t s;
      std::memcpy(&s, scales + 2 * (cg * out + n), 2);
      m.set_group(n, g, s, static_cast<uint8_t>(z));
    }
  ts.drop_resident(qw.data, qw.nbytes);
  return m;
}

}  // namespace lp::model
