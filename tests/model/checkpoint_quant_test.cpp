// AWQ / GPTQ int4 checkpoints: unpacking into kQ4 against the values a checkpoint was packed from (packed
// here by plain loops written from the formats' descriptions, not by src/), over group boundaries and odd
// shapes; quantization_config parsing; and every malformed input refused with its specific error.
#include "model/checkpoint_quant.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <numeric>

#include "core/check.h"
#include "io/safetensors.h"
#include "kernels/reference.h"
#include "model/demo_model.h"
#include "model/weights.h"
#include "util/test_util.h"

namespace lp::model {
namespace {

using test::TempDir;
using ::testing::HasSubstr;

// What a projection's checkpoint encodes: W[n][k] = (q[n][k] - z[n][g]) * s[n][g], g = gidx[k].
struct Truth {
  int64_t in = 0, out = 0, group = 0, n_groups = 0;  // group: -1 or a multiple of 64
  std::vector<int> q;                                // (out, in) 0..15
  std::vector<int> z;                                // (out, n_groups) 0..15
  std::vector<uint16_t> s;                           // (out, n_groups) f16
  std::vector<int32_t> gidx;                         // (in)
  float w(int64_t n, int64_t k) const {
    const int64_t g = gidx[k];
    return static_cast<float>(q[n * in + k] - z[n * n_groups + g]) * f16_to_f32(s[n * n_groups + g]);
  }
};

Truth make_truth(int64_t in, int64_t out, int64_t group, uint64_t seed, int z_lo = 0, int z_hi = 15) {
  Truth t;
  t.in = in;
  t.out = out;
  t.group = group;
  const int64_t gs = group == -1 ? in : group;
  t.n_groups = (in + gs - 1) / gs;
  DemoRng rng(seed, "truth");
  t.q.resize(out * in);
  for (int& v : t.q) v = static_cast<int>(rng.next() % 16);
  t.z.resize(out * t.n_groups);
  for (int& v : t.z) v = z_lo + static_cast<int>(rng.next() % (z_hi - z_lo + 1));
  t.s.resize(out * t.n_groups);
  for (uint16_t& v : t.s) v = f32_to_f16(0.001f + 0.01f * static_cast<float>(rng.next() % 1000) / 1000.0f);
  t.gidx.resize(in);
  for (int64_t k = 0; k < in; ++k) t.gidx[k] = static_cast<int32_t>(k / gs);
  return t;
}

// The packings, from the formats' descriptions (AutoAWQ's WQLinear_GEMM, AutoGPTQ's QuantLinear):
//   AWQ:  qweight[k][j] holds outputs 8j + {0,2,4,6,1,3,5,7}[i] in nibble i; qzeros[g][j] likewise.
//   GPTQ: qweight[i][n] holds inputs 8i + j in nibble j; qzeros[g][c] holds outputs 8c + j in nibble j,
//         storing z - zero_offset (1 for v1, 0 for gptq_v2).
struct Packed {
  std::vector<int32_t> qweight, qzeros;
  std::vector<int64_t> qweight_shape, qzeros_shape;
};

void put(int32_t& word, int nib, int v) {
  word = static_cast<int32_t>(static_cast<uint32_t>(word) | (static_cast<uint32_t>(v) & 15u) << (4 * nib));
}

Packed pack_awq(const Truth& t) {
  const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  Packed p;
  p.qweight.assign(t.in * t.out / 8, 0);
  p.qzeros.assign(t.n_groups * t.out / 8, 0);
  for (int64_t k = 0; k < t.in; ++k)
    for (int64_t j = 0; j < t.out / 8; ++j)
      for (int i = 0; i < 8; ++i) put(p.qweight[k * (t.out / 8) + j], i, t.q[(8 * j + order[i]) * t.in + k]);
  for (int64_t g = 0; g < t.n_groups; ++g)
    for (int64_t j = 0; j < t.out / 8; ++j)
      for (int i = 0; i < 8; ++i)
        put(p.qzeros[g * (t.out / 8) + j], i, t.z[(8 * j + order[i]) * t.n_groups + g]);
  p.qweight_shape = {t.in, t.out / 8};
  p.qzeros_shape = {t.n_groups, t.out / 8};
  return p;
}

Packed pack_gptq(const Truth& t, int zero_offset) {
  Packed p;
  p.qweight.assign(t.in / 8 * t.out, 0);
  p.qzeros.assign(t.n_groups * t.out / 8, 0);
  for (int64_t i = 0; i < t.in / 8; ++i)
    for (int64_t n = 0; n < t.out; ++n)
      for (int j = 0; j < 8; ++j) put(p.qweight[i * t.out + n], j, t.q[n * t.in + 8 * i + j]);
  for (int64_t g = 0; g < t.n_groups; ++g)
    for (int64_t c = 0; c < t.out / 8; ++c)
      for (int j = 0; j < 8; ++j)
        put(p.qzeros[g * (t.out / 8) + c], j, t.z[(8 * c + j) * t.n_groups + g] - zero_offset);
  p.qweight_shape = {t.in / 8, t.out};
  p.qzeros_shape = {t.n_groups, t.out / 8};
  return p;
}

// scales [n_groups, out] from the truth's (out, n_groups).
std::vector<uint16_t> scales_of(const Truth& t) {
  std::vector<uint16_t> s(t.n_groups * t.out);
  for (int64_t g = 0; g < t.n_groups; ++g)
    for (int64_t n = 0; n < t.out; ++n) s[g * t.out + n] = t.s[n * t.n_groups + g];
  return s;
}

const std::string kBase = "model.layers.0.self_attn.q_proj";

// Writes one projection's tensors to dir/model.safetensors (with_gidx: GPTQ's g_idx from the truth).
void write_proj(const std::filesystem::path& dir, const Truth& t, const Packed& p, bool with_gidx) {
  auto sc = scales_of(t);
  io::SafetensorsWriter w;
  w.add_i32(kBase + ".qweight", p.qweight_shape, p.qweight.data());
  w.add_i32(kBase + ".qzeros", p.qzeros_shape, p.qzeros.data());
  if (with_gidx) w.add_i32(kBase + ".g_idx", {t.in}, t.gidx.data());
  w.add(kBase + ".scales", DType::kF16, {t.n_groups, t.out}, sc.data());
  w.write(dir / "model.safetensors");
}

CheckpointQuant quant(const std::string& method, int group, const std::string& format = "gptq") {
  CheckpointQuant q;
  q.method = method;
  q.bits = 4;
  q.group_size = group;
  q.checkpoint_format = method == "gptq" ? format : "";
  q.version = method == "awq" ? "gemm" : "";
  return q;
}

// Every element of the kQ4 matrix (dequantized by the kernels' scalar definition) equals the truth, and the
// padded columns are zero nibbles.
void expect_matches(const kernels::QuantMatrix& m, const Truth& t, const std::string& label) {
  const kernels::MatView& v = m.view();
  ASSERT_EQ(v.format, kernels::WeightFormat::kQ4) << label;
  ASSERT_EQ(v.rows, t.out) << label;
  ASSERT_EQ(v.cols, t.in) << label;
  EXPECT_EQ(v.row_stride, (t.in + 63) / 64 * 64) << label;
  int bad = 0;
  for (int64_t n = 0; n < t.out; ++n)
    for (int64_t k = 0; k < t.in; ++k) {
      const float got = kernels::ref::mat_at(v, n, k), want = t.w(n, k);
      if (got != want && ++bad <= 5)
        ADD_FAILURE() << label << ": W[" << n << "][" << k << "] = " << got << ", want " << want;
    }
  EXPECT_EQ(bad, 0) << label;
  for (int64_t n = 0; n < t.out; ++n)
    for (int64_t k = t.in; k < v.row_stride; ++k) ASSERT_EQ(m.q4_at(n, k), 0) << label << " padding " << k;
}

std::string load_error(const std::filesystem::path& dir, int64_t in, int64_t out, const CheckpointQuant& q) {
  try {
    io::TensorSet ts = io::TensorSet::open_dir(dir);
    load_checkpoint_q4(ts, kBase, in, out, q);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Case {
  std::string method;  // awq | gptq
  int64_t in, out;
  int group;
  int zero_offset;    // gptq: 1 (v1) or 0 (gptq_v2)
  bool sym;           // gptq: every zero 8
  int32_t kq4_group;  // what the kQ4 matrix must use
};

class Unpack : public ::testing::TestWithParam<Case> {};

TEST_P(Unpack, EveryWeightEqualsThePackedValue) {
  const Case& c = GetParam();
  Truth t = make_truth(c.in, c.out, c.group, 7 + c.in + c.group, c.zero_offset, 15);
  if (c.sym) std::fill(t.z.begin(), t.z.end(), 8);
  TempDir dir("ckq");
  const bool awq = c.method == "awq";
  write_proj(dir.path(), t, awq ? pack_awq(t) : pack_gptq(t, c.zero_offset), !awq);
  io::TensorSet ts = io::TensorSet::open_dir(dir.path());
  auto q = quant(c.method, c.group, c.zero_offset == 0 ? "gptq_v2" : "gptq");
  kernels::QuantMatrix m = load_checkpoint_q4(ts, kBase, c.in, c.out, q);
  EXPECT_EQ(m.view().group, c.kq4_group);
  expect_matches(m, t, c.method + " in=" + std::to_string(c.in) + " group=" + std::to_string(c.group));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Unpack,
    ::testing::Values(
        Case{"awq", 192, 24, 64, 0, false, 64},     // 3 groups, in not a multiple of 128
        Case{"awq", 256, 16, 128, 0, false, 128},   // group 128 as AutoAWQ writes
        Case{"awq", 384, 8, 128, 0, false, 128},    // 3 groups of 128
        Case{"awq", 576, 40, 64, 0, false, 64},     // smol's hidden size
        Case{"gptq", 200, 16, 128, 1, false, 128},  // in % 64 != 0: padded to 256, last group partial
        Case{"gptq", 176, 24, 128, 1, false, 64},   // 192 padded is no multiple of 128: groups of 64
        Case{"gptq", 176, 8, 64, 1, true, 64},      // sym (z 8, stored 7)
        Case{"gptq", 136, 16, -1, 1, false, 192},   // one group per row
        Case{"gptq", 256, 32, 128, 0, false, 128},  // gptq_v2: zeros stored as they are
        Case{"gptq", 64, 8, 128, 1, false, 64}),    // group larger than the row
    [](const ::testing::TestParamInfo<Case>& i) {
      const Case& c = i.param;
      return c.method + "_in" + std::to_string(c.in) + "_out" + std::to_string(c.out) + "_g" +
             (c.group < 0 ? std::string("all") : std::to_string(c.group)) + (c.sym ? "_sym" : "") +
             (c.method == "gptq" && c.zero_offset == 0 ? "_v2" : "");
    });

TEST(Unpack, BlockwiseRenamedGidxIsFollowed) {
  // desc_act-style g_idx that keeps each 64-column block in one group (groups listed out of order) fits kQ4
  // with groups of 64; the weights follow g_idx, not k / group_size.
  Truth t = make_truth(256, 16, 128, 11, 1, 15);
  const int32_t block_group[4] = {1, 0, 0, 1};
  for (int64_t k = 0; k < t.in; ++k) t.gidx[k] = block_group[k / 64];
  TempDir dir("ckq");
  write_proj(dir.path(), t, pack_gptq(t, 1), true);
  io::TensorSet ts = io::TensorSet::open_dir(dir.path());
  auto q = quant("gptq", 128);
  q.desc_act = true;
  kernels::QuantMatrix m = load_checkpoint_q4(ts, kBase, t.in, t.out, q);
  EXPECT_EQ(m.view().group, 64);
  expect_matches(m, t, "renamed blocks");
}

TEST(Unpack, PermutedGidxIsRefused) {
  Truth t = make_truth(256, 16, 128, 12, 1, 15);
  std::swap(t.gidx[3], t.gidx[200]);  // input 3 in group 1, input 200 in group 0
  TempDir dir("ckq");
  write_proj(dir.path(), t, pack_gptq(t, 1), true);
  auto q = quant("gptq", 128);
  q.desc_act = true;
  EXPECT_THAT(load_error(dir.path(), 256, 16, q),
              HasSubstr("desc_act with a permuted g_idx is not supported; re-export with desc_act=false"));
  EXPECT_THAT(load_error(dir.path(), 256, 16, q), HasSubstr(kBase + ".g_idx"));
}

TEST(Unpack, GidxOutOfRangeIsRefused) {
  Truth t = make_truth(128, 8, 64, 13, 1, 15);
  TempDir dir("ckq");
  Packed p = pack_gptq(t, 1);
  t.gidx[5] = 2;  // only groups 0 and 1 exist
  write_proj(dir.path(), t, p, true);
  EXPECT_THAT(load_error(dir.path(), 128, 8, quant("gptq", 64)),
              HasSubstr("input 5 is in group 2, outside [0, 2)"));
}

TEST(Unpack, WrongShapesAndDtypesNameTheTensor) {
  Truth t = make_truth(128, 16, 64, 14, 1, 15);
  TempDir dir("ckq");
  // An AWQ reader given GPTQ's qweight layout.
  write_proj(dir.path(), t, pack_gptq(t, 1), false);
  EXPECT_THAT(load_error(dir.path(), 128, 16, quant("awq", 64)),
              HasSubstr("tensor '" + kBase + ".qweight' has shape [16, 16], expected [128, 2]"));
  // The config's in / out disagree with the file.
  EXPECT_THAT(load_error(dir.path(), 128, 24, quant("gptq", 64)),
              HasSubstr("tensor '" + kBase + ".qweight' has shape [16, 16], expected [16, 24]"));
  // A group size that gives another number of scale rows.
  EXPECT_THAT(load_error(dir.path(), 128, 16, quant("gptq", 128)),
              HasSubstr("tensor '" + kBase + ".qzeros' has shape [2, 2], expected [1, 2]"));
  // Output features not a multiple of 8.
  EXPECT_THAT(load_error(dir.path(), 128, 12, quant("gptq", 64)), HasSubstr("not a multiple of 8"));

  // qweight stored as F16, scales as F32, a missing qzeros.
  TempDir d2("ckq");
  Packed p = pack_gptq(t, 1);
  std::vector<uint16_t> f16(p.qweight.size());
  std::vector<float> f32(t.n_groups * t.out, 0.01f);
  io::SafetensorsWriter w;
  w.add(kBase + ".scales", DType::kF32, {t.n_groups, t.out}, f32.data());
  w.add(kBase + ".qweight", DType::kF16, p.qweight_shape, f16.data());
  w.write(d2.path() / "model.safetensors");
  EXPECT_THAT(load_error(d2.path(), 128, 16, quant("gptq", 64)),
              HasSubstr("tensor '" + kBase + ".qweight' has dtype F16, expected I32"));
  TempDir d3("ckq");
  io::SafetensorsWriter w3;
  w3.add_i32(kBase + ".qweight", p.qweight_shape, p.qweight.data());
  w3.add(kBase + ".scales", DType::kF32, {t.n_groups, t.out}, f32.data());
  w3.write(d3.path() / "model.safetensors");
  EXPECT_THAT(load_error(d3.path(), 128, 16, quant("gptq", 64)),
              HasSubstr("missing tensor '" + kBase + ".qzeros' (expected I32 of shape [2, 2])"));
  io::SafetensorsWriter w4;
  w4.add_i32(kBase + ".qweight", p.qweight_shape, p.qweight.data());
  w4.add_i32(kBase + ".qzeros", p.qzeros_shape, p.qzeros.data());
  w4.add(kBase + ".scales", DType::kF32, {t.n_groups, t.out}, f32.data());
  w4.write(d3.path() / "model.safetensors");
  EXPECT_THAT(load_error(d3.path(), 128, 16, quant("gptq", 64)),
              HasSubstr("tensor '" + kBase + ".scales' has dtype F32, expected F16"));
}

TEST(Unpack, GptqV1ZeroNibble15IsRefused) {
  // v1 stores z - 1: a nibble 15 would be zero point 16, which 4 bits cannot hold.
  Truth t = make_truth(128, 8, 64, 15, 1, 15);
  t.z[3 * t.n_groups + 1] = 16;  // output 3, group 1
  TempDir dir("ckq");
  write_proj(dir.path(), t, pack_gptq(t, 1), true);
  EXPECT_THAT(load_error(dir.path(), 128, 8, quant("gptq", 64)),
              HasSubstr("zero point 16 of output 3 in group 1 is outside the 4-bit range"));
}

// ---- quantization_config ----

nlohmann::json tiny_config() {
  return nlohmann::json::parse(demo_config_json(DemoSpec{}));
}

std::string config_error(const nlohmann::json& qc) {
  nlohmann::json j = tiny_config();
  j["quantization_config"] = qc;
  try {
    ModelConfig::from_json(j, "x/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(QuantizationConfig, ParsesAwqAndGptqLikeVllm) {
  nlohmann::json j = tiny_config();
  EXPECT_EQ(ModelConfig::from_json(j, "c").quant.method, "");
  // AutoAWQ spells the fields w_bit / q_group_size and the version in capitals.
  j["quantization_config"] = {{"quant_method", "awq"},
                              {"w_bit", 4},
                              {"q_group_size", 128},
                              {"version", "GEMM"},
                              {"zero_point", true}};
  CheckpointQuant a = ModelConfig::from_json(j, "c").quant;
  EXPECT_EQ(a.method, "awq");
  EXPECT_EQ(a.bits, 4);
  EXPECT_EQ(a.group_size, 128);
  EXPECT_EQ(a.version, "gemm");
  EXPECT_EQ(a.zero_offset(), 0);
  j["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4},    {"group_size", -1},
                              {"desc_act", true},       {"sym", false}, {"damp_percent", 0.01}};
  CheckpointQuant g = ModelConfig::from_json(j, "c").quant;
  EXPECT_EQ(g.method, "gptq");
  EXPECT_EQ(g.group_size, -1);
  EXPECT_TRUE(g.desc_act);
  EXPECT_FALSE(g.sym);
  EXPECT_EQ(g.checkpoint_format, "gptq");
  EXPECT_EQ(g.zero_offset(), 1);
  j["quantization_config"]["checkpoint_format"] = "gptq_v2";
  EXPECT_EQ(ModelConfig::from_json(j, "c").quant.zero_offset(), 0);
}

TEST(QuantizationConfig, RefusesWhatCannotRunNamingTheField) {
  EXPECT_THAT(
      config_error({{"quant_method", "fp8"}}),
      HasSubstr(
          "x/config.json: quantization_config.quant_method \"fp8\" is not supported; supported: awq, gptq"));
  EXPECT_THAT(config_error({{"bits", 4}}),
              HasSubstr("missing required field 'quantization_config.quant_method'"));
  EXPECT_THAT(config_error({{"quant_method", "gptq"}, {"bits", 8}, {"group_size", 128}}),
              HasSubstr("quantization_config.bits is 8; only 4-bit gptq checkpoints are supported"));
  EXPECT_THAT(
      config_error({{"quant_method", "awq"}, {"bits", 4}, {"group_size", 32}}),
      HasSubstr(
          "quantization_config.group_size is 32; loraplex's int4 layout needs groups of a multiple of 64"));
  EXPECT_THAT(config_error({{"quant_method", "awq"}, {"bits", 4}, {"group_size", -1}}),
              HasSubstr("quantization_config.group_size -1 is not an AWQ layout"));
  EXPECT_THAT(config_error({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 0}}),
              HasSubstr("group_size is 0"));
  EXPECT_THAT(
      config_error({{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}, {"version", "gemv"}}),
      HasSubstr(
          "quantization_config.version \"gemv\" is not supported; AWQ checkpoints must use the GEMM layout"));
  EXPECT_THAT(
      config_error(
          {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}, {"checkpoint_format", "marlin"}}),
      HasSubstr("checkpoint_format \"marlin\" is not supported; supported: gptq, gptq_v2"));
  EXPECT_THAT(config_error({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}, {"lm_head", true}}),
              HasSubstr("quantization_config.lm_head true"));
  EXPECT_THAT(
      config_error(
          {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}, {"modules_to_not_convert", {"gate"}}}),
      HasSubstr("modules_to_not_convert"));
  EXPECT_THAT(config_error({{"quant_method", "gptq"}, {"group_size", 128}}),
              HasSubstr("missing required field 'quantization_config.bits'"));
  EXPECT_EQ(
      config_error(
          {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}, {"modules_to_not_convert", nullptr}}),
      "");
}

// ---- whole checkpoints ----

TEST(Int4Checkpoint, Int8AtLoadIsRefused) {
  TempDir dir("ckq");
  DemoSpec spec;
  spec.quantization = "gptq";
  write_demo_model(dir.path(), spec);
  ModelConfig c = ModelConfig::from_dir(dir.path());
  LoadOptions opt;
  opt.quantization = Quantization::kInt8;
  try {
    ModelWeights::load(dir.path(), c, opt);
    ADD_FAILURE() << "int8 on a GPTQ checkpoint was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("quantization_config says gptq (an int4 checkpoint)"));
    EXPECT_THAT(e.what(), HasSubstr("--quantization int8 applies to F32/F16/BF16 checkpoints only"));
  }
}

TEST(Int4Checkpoint, PackedTensorsWithoutQuantizationConfigAreNamed) {
  TempDir dir("ckq");
  DemoSpec spec;
  spec.quantization = "gptq";
  write_demo_model(dir.path(), spec);
  nlohmann::json j = nlohmann::json::parse(test::read_file(dir.path() / "config.json"));
  j.erase("quantization_config");
  test::write_file(dir.path() / "config.json", j.dump());
  ModelConfig c = ModelConfig::from_dir(dir.path());
  try {
    ModelWeights::load(dir.path(), c);
    ADD_FAILURE() << "packed tensors read as a float checkpoint";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("has packed int4 tensors (model.layers.0.self_attn.q_proj.qweight) but "
                                    "config.json has no quantization_config"));
  }
}

TEST(Int4Checkpoint, DemoAwqNeedsInputsDivisibleByTheGroup) {
  DemoSpec spec;
  spec.quantization = "awq";  // tiny: intermediate 176
  try {
    demo_config_json(spec);
    ADD_FAILURE() << "tiny AWQ accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot be written as AWQ"));
  }
}

}  // namespace
}  // namespace lp::model
