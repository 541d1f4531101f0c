#include "util/reference_forward.h"

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

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

std::vector<double> reference_logits(const std::filesystem::path& dir, const std::vector<int32_t>& ids) {
  using model::Proj;
  model::ModelConfig c = model::ModelConfig::from_dir(dir);
  io::TensorSet ts = io::TensorSet::open_dir(dir);
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
    Mat wq = load(ts, p + "self_attn.q_proj.weight"), wk = load(ts, p + "self_attn.k_proj.weight"),
        wv = load(ts, p + "self_attn.v_proj.weight"), wo = load(ts, p + "self_attn.o_proj.weight");
    Mat bq = bias(p + "self_attn.q_proj.bias", Proj::kQ), bk = bias(p + "self_attn.k_proj.bias", Proj::kK),
        bv = bias(p + "self_attn.v_proj.bias", Proj::kV), bo = bias(p + "self_attn.o_proj.bias", Proj::kO);
    Mat n1 = load(ts, p + "input_layernorm.weight"), n2 = load(ts, p + "post_attention_layernorm.weight");
    Mat wg = load(ts, p + "mlp.gate_proj.weight"), wu = load(ts, p + "mlp.up_proj.weight"),
        wd = load(ts, p + "mlp.down_proj.weight");
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
  std::vector<double> out;
  out.reserve(T * c.vocab_size);
  for (int64_t t = 0; t < T; ++t) {
    auto h = rmsnorm(x[t], fn, c.rms_norm_eps);
    auto lg = linear(head, h, nullptr);
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

}  // namespace lp::test
