#include "util/reference_forward.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <stdexcept>
#include <string>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/demo_model.h"
#include "model/weights.h"
#include "util/test_util.h"

namespace lp::test {

namespace {

// A weight matrix as doubles, [rows][cols].
struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  double at(int64_t r, int64_t c) const { return v[r * cols + c]; }
};

Mat load(const io::TensorSet& ts, const std::string& name) {
  const io::TensorInfo* t = ts.find(name);
  if (!t) throw std::runtime_error("reference: missing " + name);
  Mat m;
  m.rows = t->shape[0];
  m.cols = t->shape.size() > 1 ? t->shape[1] : 1;
  std::vector<float> f(m.rows * m.cols);
  to_f32(t->dtype, t->data, f.data(), f.size());
  m.v.assign(f.begin(), f.end());
  return m;
}

// Issue 14's int8 rule, row by row, in f32 as the contract says; the matrix keeps the dequantized values.
void round_int8(Mat& m) {
  for (int64_t r = 0; r < m.rows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < m.cols; ++c)
      amax = std::max(amax, std::fabs(static_cast<float>(m.v[r * m.cols + c])));
    const float scale = amax == 0 ? 1.0f : amax / 127.0f;
    for (int64_t c = 0; c < m.cols; ++c) {
      float q = std::nearbyint(static_cast<float>(m.v[r * m.cols + c]) / scale);  // half to even
      q = std::min(127.0f, std::max(-127.0f, q));
      m.v[r * m.cols + c] = static_cast<double>(q) * scale;
    }
  }
}

// The int32 elements of an I32 tensor, read byte by byte (little-endian).
std::vector<int32_t> load_i32(const io::TensorSet& ts, const std::string& name, std::vector<int64_t> shape) {
  const io::I32TensorInfo* t = ts.find_i32(name);
  if (!t) throw std::runtime_error("reference: missing I32 " + name);
  if (t->shape != shape) throw std::runtime_error("reference: unexpected shape of " + name);
  std::vector<int32_t> v(t->nbytes / 4);
  const auto* b = static_cast<const unsigned char*>(t->data);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<int32_t>(uint32_t{b[4 * i]} | uint32_t{b[4 * i + 1]} << 8 |
                                uint32_t{b[4 * i + 2]} << 16 | uint32_t{b[4 * i + 3]} << 24);
  return v;
}

int nib(int32_t word, int i) {
  return static_cast<int>((static_cast<uint32_t>(word) >> (4 * i)) & 15u);
}

// An AWQ (GEMM) or GPTQ projection of (in, out) dequantized: W[n][k] = (q[n][k] - z[n][g]) * s[n][g].
//   AWQ:  qweight [in, out/8], nibble i of word (k, j) is q of output 8j + {0,2,4,6,1,3,5,7}[i]; qzeros the
//         same over groups; g = k / group_size.
//   GPTQ: qweight [in/8, out], nibble j of word (i, n) is q of input 8i + j; qzeros [G, out/8], nibble j of
//         word (g, c) is z - 1 of output 8c + j (z itself for checkpoint_format gptq_v2); g = g_idx[k].
Mat load_int4(const io::TensorSet& ts, const nlohmann::json& qc, const std::string& base, int64_t in,
              int64_t out) {
  const std::string method = qc.at("quant_method").get<std::string>();
  const int64_t gs_cfg =
      qc.contains("group_size") ? qc["group_size"].get<int64_t>() : qc.at("q_group_size").get<int64_t>();
  const int64_t gs = gs_cfg == -1 ? in : gs_cfg;
  const int64_t G = (in + gs - 1) / gs;
  Mat scales = load(ts, base + ".scales");
  if (scales.rows != G || scales.cols != out)
    throw std::runtime_error("reference: unexpected shape of scales");
  Mat w;
  w.rows = out;
  w.cols = in;
  w.v.assign(static_cast<size_t>(out * in), 0.0);
  if (method == "awq") {
    static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    auto qw = load_i32(ts, base + ".qweight", {in, out / 8});
    auto qz = load_i32(ts, base + ".qzeros", {G, out / 8});
    for (int64_t k = 0; k < in; ++k)
      for (int64_t j = 0; j < out / 8; ++j)
        for (int i = 0; i < 8; ++i) {
          const int64_t n = 8 * j + order[i], g = k / gs;
          w.v[n * in + k] = (nib(qw[k * (out / 8) + j], i) - nib(qz[g * (out / 8) + j], i)) * scales.at(g, n);
        }
  } else {
    const int zoff = qc.value("checkpoint_format", std::string("gptq")) == "gptq_v2" ? 0 : 1;
    auto qw = load_i32(ts, base + ".qweight", {in / 8, out});
    auto qz = load_i32(ts, base + ".qzeros", {G, out / 8});
    std::vector<int32_t> gidx(static_cast<size_t>(in));
    for (int64_t k = 0; k < in; ++k) gidx[k] = static_cast<int32_t>(k / gs);
    if (ts.find_i32(base + ".g_idx")) gidx = load_i32(ts, base + ".g_idx", {in});
    for (int64_t i = 0; i < in / 8; ++i)
      for (int64_t n = 0; n < out; ++n)
        for (int j = 0; j < 8; ++j) {
          const int64_t k = 8 * i + j, g = gidx[k];
          const int z = nib(qz[g * (out / 8) + n / 8], static_cast<int>(n % 8)) + zoff;
          w.v[n * in + k] = (nib(qw[i * out + n], j) - z) * scales.at(g, n);
        }
  }
  return w;
}

// y = W x (+ b)
std::vector<double> linear(const Mat& w, const std::vector<double>& x, const Mat* b) {
  std::vector<double> y(w.rows);
  for (int64_t r = 0; r < w.rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < w.cols; ++c) s += w.at(r, c) * x[c];
    y[r] = s + (b ? b->v[r] : 0.0);
  }
  return y;
}

std::vector<double> rmsnorm(const std::vector<double>& x, const Mat& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w.v[i];
  return y;
}

// Written from the Llama 3.1 paper's description / transformers' formula, independently of model/.
std::vector<double> inv_freq(const model::ModelConfig& c) {
  int half = c.head_dim / 2;
  std::vector<double> f(half);
  for (int i = 0; i < half; ++i) f[i] = std::pow(c.rope_theta, -2.0 * i / c.head_dim);
  if (c.rope_scaling.llama3) {
    const auto& s = c.rope_scaling;
    for (int i = 0; i < half; ++i) {
      double wl = 2 * std::numbers::pi / f[i];
      double lo = s.original_max_position_embeddings / s.low_freq_factor;   // long wavelengths
      double hi = s.original_max_position_embeddings / s.high_freq_factor;  // short wavelengths
      if (wl < hi) continue;
      if (wl > lo) {
        f[i] /= s.factor;
        continue;
      }
      double t = (s.original_max_position_embeddings / wl - s.low_freq_factor) /
                 (s.high_freq_factor - s.low_freq_factor);
      f[i] = (1 - t) * f[i] / s.factor + t * f[i];
    }
  }
  return f;
}

void rope(double* x, int head_dim, int64_t pos, const std::vector<double>& inv) {
  int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    double a = x[i], b = x[i + half], ang = pos * inv[i];
    x[i] = a * std::cos(ang) - b * std::sin(ang);
    x[i + half] = b * std::cos(ang) + a * std::sin(ang);
  }
}

}  // namespace

std::vector<double> reference_logits(const std::filesystem::path& dir, const std::vector<int32_t>& ids,
                                     RefQuant quant, bool quantize_lm_head) {
  using model::Proj;
  model::ModelConfig c = model::ModelConfig::from_dir(dir);
  io::TensorSet ts = io::TensorSet::open_dir(dir);
  nlohmann::json qc;  // quantization_config of an int4 checkpoint, read here (not through ModelConfig)
  {
    std::ifstream f(dir / "config.json");
    nlohmann::json cj = nlohmann::json::parse(f);
    if (cj.contains("quantization_config")) qc = cj["quantization_config"];
  }
  // Projection `name` ("...q_proj") of (in, out), as the configuration asks.
  auto proj = [&](const std::string& name, Proj pr) {
    auto [in, out] = model::proj_shape(c, pr);
    if (!qc.is_null()) return load_int4(ts, qc, name, in, out);
    Mat m = load(ts, name + ".weight");
    if (quant == RefQuant::kInt8) round_int8(m);
    return m;
  };
  const int H = c.hidden_size, hd = c.head_dim, nh = c.n_heads, nkv = c.n_kv_heads;
  const int64_t T = static_cast<int64_t>(ids.size());
  Mat emb = load(ts, "model.embed_tokens.weight");
  std::vector<double> inv = inv_freq(c);

  std::vector<std::vector<double>> x(T);
  for (int64_t t = 0; t < T; ++t) x[t].assign(emb.v.begin() + ids[t] * H, emb.v.begin() + (ids[t] + 1) * H);

  for (int l = 0; l < c.n_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    // The bias of projection `pr` when the config gives it one (empty otherwise).
    auto bias = [&](const std::string& n, Proj pr) { return model::has_bias(c, pr) ? load(ts, n) : Mat{}; };
    auto ptr = [](const Mat& b) { return b.v.empty() ? nullptr : &b; };
    Mat wq = proj(p + "self_attn.q_proj", Proj::kQ), wk = proj(p + "self_attn.k_proj", Proj::kK),
        wv = proj(p + "self_attn.v_proj", Proj::kV), wo = proj(p + "self_attn.o_proj", Proj::kO);
    Mat bq = bias(p + "self_attn.q_proj.bias", Proj::kQ), bk = bias(p + "self_attn.k_proj.bias", Proj::kK),
        bv = bias(p + "self_attn.v_proj.bias", Proj::kV), bo = bias(p + "self_attn.o_proj.bias", Proj::kO);
    Mat n1 = load(ts, p + "input_layernorm.weight"), n2 = load(ts, p + "post_attention_layernorm.weight");
    Mat wg = proj(p + "mlp.gate_proj", Proj::kGate), wu = proj(p + "mlp.up_proj", Proj::kUp),
        wd = proj(p + "mlp.down_proj", Proj::kDown);
    Mat bg = bias(p + "mlp.gate_proj.bias", Proj::kGate), bu = bias(p + "mlp.up_proj.bias", Proj::kUp),
        bd = bias(p + "mlp.down_proj.bias", Proj::kDown);

    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (int64_t t = 0; t < T; ++t) {
      auto h = rmsnorm(x[t], n1, c.rms_norm_eps);
      q[t] = linear(wq, h, ptr(bq));
      k[t] = linear(wk, h, ptr(bk));
      v[t] = linear(wv, h, ptr(bv));
      for (int hh = 0; hh < nh; ++hh) rope(q[t].data() + hh * hd, hd, t, inv);
      for (int hh = 0; hh < nkv; ++hh) rope(k[t].data() + hh * hd, hd, t, inv);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> att(static_cast<size_t>(nh) * hd, 0.0);
      for (int hh = 0; hh < nh; ++hh) {
        int g = hh / (nh / nkv);
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[t][hh * hd + i] * k[j][g * hd + i];
          s[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (int64_t j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i) att[hh * hd + i] += s[j] / z * v[j][g * hd + i];
      }
      auto o = linear(wo, att, ptr(bo));
      for (int i = 0; i < H; ++i) x[t][i] += o[i];
      auto h = rmsnorm(x[t], n2, c.rms_norm_eps);
      auto gt = linear(wg, h, ptr(bg)), up = linear(wu, h, ptr(bu));
      for (size_t i = 0; i < gt.size(); ++i) gt[i] = gt[i] / (1 + std::exp(-gt[i])) * up[i];
      auto d = linear(wd, gt, ptr(bd));
      for (int i = 0; i < H; ++i) x[t][i] += d[i];
    }
  }
  Mat fn = load(ts, "model.norm.weight");
  Mat head = c.tie_word_embeddings ? emb : load(ts, "lm_head.weight");
  if (quantize_lm_head && quant == RefQuant::kInt8) round_int8(head);
  std::vector<double> out;
  out.reserve(T * c.vocab_size);
  for (int64_t t = 0; t < T; ++t) {
    auto h = rmsnorm(x[t], fn, c.rms_norm_eps);
    auto lg = linear(head, h, nullptr);
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

std::vector<int32_t> demo_ids(int n, int vocab, uint64_t seed) {
  model::DemoRng rng(seed, "ids");
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng.next() % vocab);
  return ids;
}

double normalized_error(const std::vector<float>& got, const std::vector<double>& ref) {
  std::vector<float> rf(ref.begin(), ref.end());
  return test::normalized_error(got.data(), rf.data(), std::min(got.size(), rf.size()));
}

}  // namespace lp::test
