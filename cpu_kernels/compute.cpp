// gemm_4bit, gemm_8bit and moe_mxfp4 (see compute.h): activation preparation, routing, row-chunk tasks.
#include "compute.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace gek {
namespace {

// Activations of T tokens in the ISA's layout (f32) or quantized (i8).
struct Prepared {
  std::vector<float> xf;
  std::vector<int8_t> xq;
  std::vector<float> xd4;
  std::vector<int32_t> xoff;
  Acts acts{};
};

// `offset`: the Lut offset of the weights these activations will be dotted with (Acts::xoff).
void prepare(const Engine& eng, const float* x, int64_t T, int64_t nb, int offset, Prepared& p) {
  const int g = eng.isa->group;
  p.acts.nb = nb;
  p.acts.group = g;
  const int64_t K = nb * 32;
  if (eng.mode == ActMode::F32) {
    p.xf.resize(size_t(T * K));
    parallel(eng, T, 16, [&](int64_t t) { layout_f32(x + t * K, 1, nb, g, p.xf.data() + t * K); });
    p.acts.xf = p.xf.data();
  } else {
    p.xq.resize(size_t(T * K));
    p.xd4.resize(size_t(T * nb * 4));
    p.xoff.resize(size_t(T * nb * 4));
    parallel(eng, T, 16, [&](int64_t t) {
      int8_t* q = p.xq.data() + t * K;
      float* d4 = p.xd4.data() + t * nb * 4;
      int32_t* xoff = p.xoff.data() + t * nb * 4;
      if (eng.isa->quantize) eng.isa->quantize(x + t * K, 1, nb, offset, q, d4, xoff);
      else quantize_i8(x + t * K, 1, nb, g, offset, q, d4, xoff);
    });
    p.acts.xoff = p.xoff.data();
    p.acts.xq = p.xq.data();
    p.acts.xd4 = p.xd4.data();
  }
}

float swiglu(float g, float l, const MoeShape& s) {
  g = std::min(g, s.limit);
  l = std::min(std::max(l, -s.limit), s.limit);
  return g / (1.f + std::exp(-s.alpha * g)) * (l + s.offset);
}

// A gate_up job's epilogue: its rows come in (gate, linear) pairs; bias, then the clamped
// SwiGLU into act [ntok, n_rows / 2], so the 2I-wide product is never stored.
struct Glu {
  const MoeShape* shape;
  const float* bias;    // [n_rows]
  float* act;
};

// One matrix-times-tokens job: rows [0, n_rows) of w against the listed tokens, into y
// [ntok, n_rows], or through `glu` when set.
struct Job {
  Rows w;
  int64_t n_rows;
  const int32_t* tok;
  int ntok;
  float* y;
  Glu glu{};
};

// Rows per task (even, so a task holds whole SwiGLU pairs): a task should carry about the same
// work whatever the token count.
int64_t chunk_rows(int ntok) { return std::max<int64_t>(4, 256 / (1 + ntok / 4)) & ~int64_t(1); }

struct Tasks {
  const Engine* eng;
  const Acts* acts;
  std::vector<Job> jobs;
  std::vector<std::pair<int, int64_t>> items;   // (job, first row)

  void add(const Job& j) {
    jobs.push_back(j);
    const int64_t c = chunk_rows(j.ntok);
    for (int64_t r = 0; r < j.n_rows; r += c) items.emplace_back(int(jobs.size() - 1), r);
  }

  static void run_one(void* self, size_t i) {
    auto* t = static_cast<Tasks*>(self);
    const auto [ji, r0] = t->items[i];
    const Job& j = t->jobs[size_t(ji)];
    const int64_t r1 = std::min(j.n_rows, r0 + chunk_rows(j.ntok));
    auto fn = t->eng->mode == ActMode::F32 ? t->eng->isa->rows_f32 : t->eng->isa->rows_i8;
    if (!j.glu.act) {
      fn(j.w, *t->acts, r0, r1, j.tok, j.ntok, j.y, j.n_rows);
      return;
    }
    const int64_t nr = r1 - r0, half = j.n_rows / 2;
    std::vector<float> part(size_t(j.ntok * nr));     // [ntok, nr]: this task's rows
    fn(offset_rows(j.w, r0), *t->acts, 0, nr, j.tok, j.ntok, part.data(), nr);
    const float* b = j.glu.bias + r0;
    for (int i = 0; i < j.ntok; ++i) {
      const float* g = part.data() + i * nr;
      float* a = j.glu.act + i * half + r0 / 2;
      for (int64_t c = 0; c < nr / 2; ++c) a[c] = swiglu(g[2 * c] + b[2 * c], g[2 * c + 1] + b[2 * c + 1], *j.glu.shape);
    }
  }

  void run() {
    if (!items.empty()) eng->pool.parallel_for(eng->pool.ctx, run_one, items.size(), this);
  }
};

void run_jobs(const Engine& eng, const Acts& acts, const std::vector<Job>& jobs) {
  Tasks t{&eng, &acts, {}, {}};
  for (const Job& j : jobs) t.add(j);
  t.run();
}

// One token's router logits in float32, top-k (ties: lower index first), softmax over the k
// selected: expert[0..k), weight[0..k).
void route_token(const MoeShape& s, const MoeWeights& w, const float* x, int32_t* expert, float* weight) {
  const int64_t E = s.experts, H = s.hidden, k = s.top_k;
  std::vector<float> logit(static_cast<size_t>(E));
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    const float* r = w.router_w + e * H;
    float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= H; i += 8)
      for (int j = 0; j < 8; ++j) part[j] += x[i + j] * r[i + j];
    float acc = 0.f;
    for (; i < H; ++i) acc += x[i] * r[i];
    for (int j = 0; j < 8; ++j) acc += part[j];
    logit[size_t(e)] = acc + w.router_b[e];
    order[size_t(e)] = int32_t(e);
  }
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return logit[size_t(a)] > logit[size_t(b)] || (logit[size_t(a)] == logit[size_t(b)] && a < b);
  });
  const float top = logit[size_t(order[0])];
  double sum = 0.0;
  for (int64_t j = 0; j < k; ++j) sum += std::exp(double(logit[size_t(order[size_t(j)])] - top));
  for (int64_t j = 0; j < k; ++j) {
    expert[j] = order[size_t(j)];
    weight[j] = float(std::exp(double(logit[size_t(order[size_t(j)])] - top)) / sum);
  }
}

}  // namespace

Rows offset_rows(const Rows& all, int64_t row0) {
  Rows r = all;
  r.blocks = all.blocks + row0 * all.nb * 16;
  const size_t scale_bytes = all.kind == ScaleKind::E8M0 ? 1 : 2;
  r.scales = static_cast<const uint8_t*>(all.scales) + size_t(row0 * all.nb) * scale_bytes;
  return r;
}

Rows expert_rows(const Rows& all, int64_t e, int64_t rows_per_expert) { return offset_rows(all, e * rows_per_expert); }

void gemm_4bit(const Engine& eng, const Rows& w, int64_t n_rows, const float* x, int64_t T,
               const float* bias, float* y) {
  Prepared p;
  prepare(eng, x, T, w.nb, w.lut->offset, p);
  std::vector<int32_t> tok(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) tok[size_t(t)] = int32_t(t);
  // Token groups of at most 64 rows of y per job keep a task's working set small.
  std::vector<Job> jobs;
  for (int64_t t0 = 0; t0 < T; t0 += 64) {
    const int n = int(std::min<int64_t>(64, T - t0));
    jobs.push_back(Job{w, n_rows, tok.data() + t0, n, y + t0 * n_rows});
  }
  run_jobs(eng, p.acts, jobs);
  if (bias)
    parallel(eng, T, 8, [&](int64_t t) {
      for (int64_t r = 0; r < n_rows; ++r) y[t * n_rows + r] += bias[r];
    });
}

void gemm_8bit(const Engine& eng, const Rows8& w, int64_t n_rows, const float* x, int64_t T,
               const float* bias, float* y) {
  Acts8 a{w.nb, x, nullptr, nullptr};                  // f32: the activations as they are
  std::vector<int8_t> xq;
  std::vector<float> xd8;
  if (eng.mode == ActMode::I8) {
    const int64_t nb = w.nb;
    xq.resize(size_t(T * nb * 32));
    xd8.resize(size_t(T * nb * 8));
    const Quantize8Fn quantize8 = eng.isa->quantize8 ? eng.isa->quantize8 : quantize_i8_natural;
    parallel(eng, T, 16, [&](int64_t t) {
      quantize8(x + t * nb * 32, 1, nb, xq.data() + t * nb * 32, xd8.data() + t * nb * 8);
    });
    a = Acts8{nb, nullptr, xq.data(), xd8.data()};
  }
  const Rows8Fn fn = eng.mode == ActMode::F32 ? eng.isa->rows8_f32 : eng.isa->rows8_i8;
  // Tasks: (token group of <= 64, row chunk), as gemm_4bit's jobs.
  std::vector<int32_t> tok(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) tok[size_t(t)] = int32_t(t);
  std::vector<std::pair<int64_t, int64_t>> items;      // (first token, first row)
  for (int64_t t0 = 0; t0 < T; t0 += 64)
    for (int64_t r0 = 0; r0 < n_rows; r0 += chunk_rows(int(std::min<int64_t>(64, T - t0))))
      items.emplace_back(t0, r0);
  parallel(eng, int64_t(items.size()), 1, [&](int64_t i) {
    const auto [t0, r0] = items[size_t(i)];
    const int n = int(std::min<int64_t>(64, T - t0));
    const int64_t r1 = std::min(n_rows, r0 + chunk_rows(n));
    fn(w, a, r0, r1, tok.data() + t0, n, y + t0 * n_rows, n_rows);
  });
  if (bias)
    parallel(eng, T, 8, [&](int64_t t) {
      for (int64_t r = 0; r < n_rows; ++r) y[t * n_rows + r] += bias[r];
    });
}

void moe_mxfp4(const Engine& eng, const MoeShape& s, const MoeWeights& w, const float* hidden,
               int64_t T, float* out) {
  const int64_t E = s.experts, k = s.top_k, H = s.hidden, I = s.inter, P = T * k;
  std::vector<int32_t> expert(size_t(T * k));
  std::vector<float> weight(size_t(T * k));
  parallel(eng, T, 8, [&](int64_t t) { route_token(s, w, hidden + t * H, &expert[size_t(t * k)], &weight[size_t(t * k)]); });
  // Pairs (token, slot) grouped by expert: pair_tok[off[e] .. off[e+1]) are expert e's tokens.
  std::vector<int64_t> off(size_t(E + 1), 0);
  for (int64_t p = 0; p < P; ++p) off[size_t(expert[size_t(p)] + 1)]++;
  for (int64_t e = 0; e < E; ++e) off[size_t(e + 1)] += off[size_t(e)];
  std::vector<int32_t> pair_tok(static_cast<size_t>(P)), pair_of(static_cast<size_t>(P));   // pair_of[t*k+j] = grouped index
  {
    std::vector<int64_t> fill(off.begin(), off.end() - 1);
    for (int64_t p = 0; p < P; ++p) {
      const int64_t at = fill[size_t(expert[size_t(p)])]++;
      pair_tok[size_t(at)] = int32_t(p / k);
      pair_of[size_t(p)] = int32_t(at);
    }
  }
  std::vector<int32_t> ident(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; ++p) ident[size_t(p)] = int32_t(p);

  Prepared xin;
  prepare(eng, hidden, T, w.gate_up.nb, w.gate_up.lut->offset, xin);
  std::vector<float> act(size_t(P * I));     // SwiGLU of gate_up + bias, per grouped pair
  std::vector<Job> jobs;
  for (int64_t e = 0; e < E; ++e) {
    const int n = int(off[size_t(e + 1)] - off[size_t(e)]);
    if (n) jobs.push_back(Job{expert_rows(w.gate_up, e, 2 * I), 2 * I, pair_tok.data() + off[size_t(e)], n, nullptr,
                              Glu{&s, w.gate_up_bias + e * 2 * I, act.data() + off[size_t(e)] * I}});
  }
  run_jobs(eng, xin.acts, jobs);

  Prepared xa;
  prepare(eng, act.data(), P, w.down.nb, w.down.lut->offset, xa);
  std::vector<float> dn(size_t(P * H));
  jobs.clear();
  for (int64_t e = 0; e < E; ++e) {
    const int n = int(off[size_t(e + 1)] - off[size_t(e)]);
    if (n) jobs.push_back(Job{expert_rows(w.down, e, H), H, ident.data() + off[size_t(e)], n,
                              dn.data() + off[size_t(e)] * H});
  }
  run_jobs(eng, xa.acts, jobs);

  // out[t] = sum_j weight[t, j] * (y_pair + down_bias[e]), slots in routing order.
  parallel(eng, T, 8, [&](int64_t t) {
    float* o = out + t * H;
    std::fill(o, o + H, 0.f);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t p = pair_of[size_t(t * k + j)];
      const float wt = weight[size_t(t * k + j)];
      const float* y = dn.data() + p * H;
      const float* b = w.down_bias + int64_t(expert[size_t(t * k + j)]) * H;
      for (int64_t h = 0; h < H; ++h) o[h] += wt * (y[h] + b[h]);
    }
  });
}

}  // namespace gek
