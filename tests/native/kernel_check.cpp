// Every kernel of every ISA table this CPU runs, and the SinkAttention kernel, against a float64
// reference with the error bounds the Python tests state (tests/test_cpu_kernels*.py), without
// ONNX Runtime: so the same check runs on a machine (or an emulator) that has no Python or ORT
// build, e.g. the aarch64 NEON path under qemu-aarch64 (tests/test_cpu_kernels_native.py).
//
// Usage: kernel_check [isa ...]   (default: every ISA select_isa finds, portable included)
// Prints one line per ISA and check; exit status 1 when any check fails, 2 on a named ISA the
// CPU does not have.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attention.h"
#include "kernels.h"

using namespace gek;

namespace {

constexpr double U = 1.0 / (1 << 24);          // float32 unit roundoff
constexpr double kDenorm = 1.401298464324817e-45;   // 2^-149: one denormal product's rounding
constexpr int64_t N = 37;                        // rows: a row block / chunk tail everywhere

struct Case {
  int64_t nb;
  int tokens;
};
// 9 blocks: AVX2 4 pairs + 1 tail, AVX-512 2 groups of 4 + 1 tail; 8: no tail; 1: tail only.
// Tokens 1; 4 + 2; 4 + 4 + 3 (the token tiles of 4).
const Case kCases[] = {{9, 1}, {9, 6}, {9, 11}, {8, 6}, {1, 3}};

std::mt19937 rng(1234);

std::vector<float> activations(int T, int64_t K) {
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(T * K));
  for (auto& v : x) v = nd(rng);
  // First token: a block of exact ties (amax 127 -> d = 1, values n + 0.5) and a zero block.
  for (int e = 0; e < 32; ++e) x[size_t(e)] = e == 0 ? 127.f : float(e - 16) + 0.5f;
  if (K >= 64)
    for (int e = 32; e < 64; ++e) x[size_t(e)] = 0.f;
  return x;
}

// The token list the kernels read: the T tokens in reverse (as MoE gathers expert rows).
std::vector<int32_t> token_list(int T) {
  std::vector<int32_t> tok(static_cast<size_t>(T));
  for (int i = 0; i < T; ++i) tok[size_t(i)] = T - 1 - i;
  return tok;
}

struct Failures {
  int count = 0;
  void check(bool ok, const char* isa, const std::string& what, double worst) {
    std::printf("%-8s %-44s %s (worst error / bound %.3g)\n", isa, what.c_str(), ok ? "ok" : "FAIL", worst);
    if (!ok) ++count;
  }
};

// ---- 4-bit rows --------------------------------------------------------------------------
struct Weights4 {
  std::vector<uint8_t> blocks, scales;   // scales: E8M0 bytes, or float16 (2 bytes each)
  Rows rows;
};

Weights4 weights4(bool mxfp4, int64_t nb) {
  Weights4 w;
  w.blocks.resize(size_t(N * nb * 16));
  for (auto& b : w.blocks) b = uint8_t(rng());
  if (mxfp4) {
    w.scales.resize(size_t(N * nb));
    for (auto& s : w.scales) s = uint8_t(118 + rng() % 8);
    const uint8_t special[] = {0, 1, 2, 200};     // denormal 2^-128, 2^-127, normal, large
    for (int64_t b = 0; b < nb && b < 4; ++b) w.scales[size_t(b)] = special[b];
  } else {
    w.scales.resize(size_t(N * nb * 2));
    for (int64_t i = 0; i < N * nb; ++i) {          // float16 in [2^-6, 2^-3), either sign
      const uint16_t h = uint16_t(((rng() & 1) << 15) | ((9 + rng() % 3) << 10) | (rng() & 1023));
      std::memcpy(&w.scales[size_t(2 * i)], &h, 2);
    }
  }
  w.rows = Rows{w.blocks.data(), w.scales.data(), mxfp4 ? ScaleKind::E8M0 : ScaleKind::F16,
                mxfp4 ? &mxfp4_lut() : &int4_lut(), nb};
  return w;
}

// Weight integer of row r, natural element k, and the block scales (float64).
int weight_int(const Rows& w, int64_t r, int64_t k) {
  const uint8_t byte = w.blocks[(r * w.nb + k / 32) * 16 + (k % 32) / 2];
  return w.lut->v[k % 2 ? byte >> 4 : byte & 15];
}

std::vector<double> scales64(const Rows& w, int64_t r) {
  std::vector<float> s(size_t(w.nb));
  row_scales(w, r, s.data());
  return std::vector<double>(s.begin(), s.end());
}

double run4(const Isa& isa, bool mxfp4, bool int8, const Case& c) {
  const int64_t nb = c.nb, K = nb * 32;
  const int T = c.tokens;
  const Weights4 w = weights4(mxfp4, nb);
  const std::vector<float> x = activations(T, K);
  const std::vector<int32_t> tok = token_list(T);
  std::vector<float> y(size_t(T * N), NAN);
  // Natural-order int8 values and scales: the reference's view of the quantized activations.
  std::vector<int8_t> qn(size_t(T * K));
  std::vector<float> dn(size_t(T * nb * 8));
  quantize_i8_natural(x.data(), T, nb, qn.data(), dn.data());
  // The ISA's own layout (and its own quantizer when it has one).
  std::vector<float> xf(size_t(T * K));
  std::vector<int8_t> xq(size_t(T * K));
  std::vector<float> xd4(size_t(T * nb * 4));
  std::vector<int32_t> xoff(size_t(T * nb * 4));
  Acts a{nb, isa.group, nullptr, nullptr, nullptr, nullptr};
  if (int8) {
    if (isa.quantize) isa.quantize(x.data(), T, nb, w.rows.lut->offset, xq.data(), xd4.data(), xoff.data());
    else quantize_i8(x.data(), T, nb, isa.group, w.rows.lut->offset, xq.data(), xd4.data(), xoff.data());
    a.xq = xq.data();
    a.xd4 = xd4.data();
    a.xoff = xoff.data();
    (isa.rows_i8)(w.rows, a, 0, N, tok.data(), T, y.data(), N);
  } else {
    layout_f32(x.data(), T, nb, isa.group, xf.data());
    a.xf = xf.data();
    (isa.rows_f32)(w.rows, a, 0, N, tok.data(), T, y.data(), N);
  }
  double worst = 0;
  for (int i = 0; i < T; ++i) {
    const int64_t t = tok[size_t(i)];
    for (int64_t r = 0; r < N; ++r) {
      const std::vector<double> s = scales64(w.rows, r);
      double ref = 0, mag = 0, ints = 0;
      for (int64_t b = 0; b < nb; ++b) {
        double dot = 0, m = 0;
        for (int64_t k = b * 32; k < b * 32 + 32; ++k) {
          const double xv = int8 ? double(qn[size_t(t * K + k)]) : double(x[size_t(t * K + k)]);
          dot += xv * weight_int(w.rows, r, k);
          m += std::fabs(xv * weight_int(w.rows, r, k));
        }
        const double sc = int8 ? s[size_t(b)] * double(dn[size_t((t * nb + b) * 8)]) : s[size_t(b)];
        ref += dot * sc;
        mag += m * std::fabs(sc);
        ints += m;
      }
      // f32: exact products, fp32 sums: (K + 2 nb + 2) u sum|x w|; i8: exact int32 block dots,
      // then scale products, nb fused adds and the lane sum: (nb + 8) u sum_b |s d| sum|w q|,
      // plus, where s d is denormal (s = 2^-128), its absolute rounding 2^-150 times the dot.
      // Both: 2^-149 per product for the denormal-scale blocks.
      const double bound = (int8 ? double(nb + 8) : double(K + 2 * nb + 2)) * U * mag +
                           (int8 ? ints * kDenorm / 2 : 0.0) + double(K) * kDenorm;
      const double err = std::fabs(double(y[size_t(i * N + r)]) - ref);
      const double ratio = err / bound;
      if (!(ratio <= 1.0)) return ratio != ratio ? INFINITY : ratio;   // NaN (unwritten) fails
      if (ratio > worst) worst = ratio;
    }
  }
  return worst;
}

// ---- 8-bit rows --------------------------------------------------------------------------
double run8(const Isa& isa, bool int8, const Case& c) {
  const int64_t nb = c.nb, K = nb * 32;
  const int T = c.tokens;
  std::vector<int8_t> q(size_t(N * K));
  std::vector<uint16_t> d(size_t(N * nb));
  for (auto& v : q) v = int8_t(int(rng() % 255) - 127);
  for (auto& v : d) v = uint16_t((8 + rng() % 4) << 10 | (rng() & 1023));   // float16 in [2^-7, 2^-3)
  const Rows8 w{q.data(), d.data(), nb};
  const std::vector<float> x = activations(T, K);
  const std::vector<int32_t> tok = token_list(T);
  std::vector<float> y(size_t(T * N), NAN);
  std::vector<int8_t> qn(size_t(T * K)), xq(size_t(T * K));
  std::vector<float> dn(size_t(T * nb * 8)), xd8(size_t(T * nb * 8));
  quantize_i8_natural(x.data(), T, nb, qn.data(), dn.data());
  if (int8) {
    const Quantize8Fn q8 = isa.quantize8 ? isa.quantize8 : quantize_i8_natural;
    q8(x.data(), T, nb, xq.data(), xd8.data());
    isa.rows8_i8(w, Acts8{nb, nullptr, xq.data(), xd8.data()}, 0, N, tok.data(), T, y.data(), N);
  } else {
    isa.rows8_f32(w, Acts8{nb, x.data(), nullptr, nullptr}, 0, N, tok.data(), T, y.data(), N);
  }
  double worst = 0;
  for (int i = 0; i < T; ++i) {
    const int64_t t = tok[size_t(i)];
    for (int64_t r = 0; r < N; ++r) {
      double ref = 0, mag = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const double db = half_to_float(d[size_t(r * nb + b)]);
        double dot = 0, m = 0;
        for (int64_t k = b * 32; k < b * 32 + 32; ++k) {
          const double xv = int8 ? double(qn[size_t(t * K + k)]) : double(x[size_t(t * K + k)]);
          dot += xv * q[size_t(r * K + k)];
          m += std::fabs(xv * q[size_t(r * K + k)]);
        }
        const double sc = int8 ? db * double(dn[size_t((t * nb + b) * 8)]) : db;
        ref += dot * sc;
        mag += m * std::fabs(sc);
      }
      // f32: w = q d exact, K products and sums in fp32: (K + 2) u sum|x w|; i8 as run4's.
      const double bound = (int8 ? double(nb + 8) : double(K + 2)) * U * mag;
      const double err = std::fabs(double(y[size_t(i * N + r)]) - ref);
      const double ratio = err / bound;
      if (!(ratio <= 1.0)) return ratio != ratio ? INFINITY : ratio;
      if (ratio > worst) worst = ratio;
    }
  }
  return worst;
}

// ---- quantizers: an ISA's own must give the portable one's bits ----------------------------
bool quantizers_match(const Isa& isa) {
  const int T = 5;
  const int64_t nb = 9, K = nb * 32;
  const std::vector<float> x = activations(T, K);
  bool ok = true;
  if (isa.quantize) {
    std::vector<int8_t> q0(size_t(T * K)), q1(size_t(T * K));
    std::vector<float> d0(size_t(T * nb * 4)), d1(size_t(T * nb * 4));
    std::vector<int32_t> o0(size_t(T * nb * 4)), o1(size_t(T * nb * 4));
    quantize_i8(x.data(), T, nb, isa.group, 12, q0.data(), d0.data(), o0.data());
    isa.quantize(x.data(), T, nb, 12, q1.data(), d1.data(), o1.data());
    ok = ok && q0 == q1 && std::memcmp(d0.data(), d1.data(), d0.size() * 4) == 0 && o0 == o1;
  }
  if (isa.quantize8) {
    std::vector<int8_t> q0(size_t(T * K)), q1(size_t(T * K));
    std::vector<float> d0(size_t(T * nb * 8)), d1(size_t(T * nb * 8));
    quantize_i8_natural(x.data(), T, nb, q0.data(), d0.data());
    isa.quantize8(x.data(), T, nb, q1.data(), d1.data());
    ok = ok && q0 == q1 && std::memcmp(d0.data(), d1.data(), d0.size() * 4) == 0;
  }
  return ok;
}

// ---- SinkAttention (full layers) ---------------------------------------------------------
void serial(void*, void (*fn)(void*, size_t), size_t n, void* user) {
  for (size_t i = 0; i < n; ++i) fn(user, i);
}

// Two rows: row 0 brings `n0` tokens after `p0` cached ones, row 1 one token after 37 (decode),
// then the output and the new cache slots against float64.
double run_attention(int64_t H, int64_t Hkv, int64_t D, int64_t p0, int64_t n0) {
  const int64_t B = 2, S = n0 > 1 ? n0 : 1, C = 96, P = 128, G = H / Hkv;
  std::normal_distribution<float> nd;
  auto vec = [&](int64_t n, float sd) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = nd(rng) * sd;
    return v;
  };
  const std::vector<float> q = vec(B * S * H * D, 1.f), k = vec(B * S * Hkv * D, 1.f), v = vec(B * S * Hkv * D, 1.f),
                           sinks = vec(H, 1.f), cs = vec(P * D / 2, 0.8f), sn = vec(P * D / 2, 0.8f);
  std::vector<float> past_k = vec(B * Hkv * C * D, 1.f), past_v = vec(B * Hkv * C * D, 1.f);
  std::vector<float> pk = past_k, pv = past_v, out(size_t(B * S * H * D), NAN);   // present: in place
  const int32_t past_len[2] = {int32_t(p0), 37}, new_len[2] = {int32_t(n0), 1};
  const AttnArgs a{B, S, C, P, q.data(), k.data(), v.data(), sinks.data(), cs.data(), sn.data(), pk.data(), pv.data(),
                   past_len, new_len, out.data(), pk.data(), pv.data()};
  const float scale = 1.f / std::sqrt(float(D));
  if (!check_attention_lengths(a).empty()) return INFINITY;
  sink_attention(Engine{&isa_portable(), ActMode::F32, Pool{serial, nullptr}}, AttnShape{H, Hkv, D, scale}, a);
  auto rot = [&](const float* x, int64_t p, double* o) {   // RoPE in float64
    for (int64_t i = 0; i < D / 2; ++i) {
      const double c = cs[size_t(p * D / 2 + i)], s = sn[size_t(p * D / 2 + i)];
      o[i] = x[i] * c - x[i + D / 2] * s;
      o[i + D / 2] = x[i + D / 2] * c + x[i] * s;
    }
  };
  double worst = 0;
  std::vector<double> kr(static_cast<size_t>(D)), qr(static_cast<size_t>(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < S; ++t) {
      const int64_t p = past_len[b] + t;
      for (int64_t h = 0; h < H; ++h) {
        const float* o = &out[size_t((b * S + t) * H * D + h * D)];
        if (t >= new_len[b]) {                  // padded query: zeros
          for (int64_t d = 0; d < D; ++d)
            if (o[d] != 0.f) return INFINITY;
          continue;
        }
        const int64_t g = h / G;
        rot(&q[size_t((b * S + t) * H * D + h * D)], p, qr.data());
        std::vector<double> sc(size_t(p + 1)), err(size_t(p + 1));
        for (int64_t kp = 0; kp <= p; ++kp) {   // keys: cached, or this step's (RoPE'd here)
          const bool fresh = kp >= past_len[b];
          const float* kx = fresh ? &k[size_t((b * S + kp - past_len[b]) * Hkv * D + g * D)]
                                  : &past_k[size_t(((b * Hkv + g) * C + kp) * D)];
          if (fresh) rot(kx, kp, kr.data());
          double dot = 0, mag = 0;
          for (int64_t d = 0; d < D; ++d) {
            const double kv = fresh ? kr[size_t(d)] : kx[d];
            dot += qr[size_t(d)] * kv;
            mag += std::fabs(qr[size_t(d)] * kv);
          }
          sc[size_t(kp)] = dot * scale;
          // the kernel's score: RoPE of q and k in float (2 roundings each, relative), the scale,
          // D products in 8 partial sums: (D + 8) u of the magnitude
          err[size_t(kp)] = (double(D) + 8) * U * mag * scale;
        }
        double m = sinks[size_t(h)];
        for (double x : sc) m = std::max(m, x);
        double z = std::exp(sinks[size_t(h)] - m), es = 0;
        for (size_t i = 0; i < sc.size(); ++i) {
          z += std::exp(sc[i] - m);
          es = std::max(es, err[i]);
        }
        for (int64_t d = 0; d < D; ++d) {
          double ref = 0, vmax = 0;
          for (int64_t kp = 0; kp <= p; ++kp) {
            const bool fresh = kp >= past_len[b];
            const double vv = fresh ? v[size_t((b * S + kp - past_len[b]) * Hkv * D + g * D + d)]
                                    : past_v[size_t(((b * Hkv + g) * C + kp) * D + d)];
            ref += std::exp(sc[size_t(kp)] - m) / z * vv;
            vmax = std::max(vmax, std::fabs(vv));
          }
          // Softmax weights off by at most 2 es (scores) + 1e-6 (the exp's 2e-7 and the sums'
          // L u, L <= 96); the output is a convex combination of the values.
          const double bound = (2 * es + 1e-6 + 2 * double(p + 2) * U) * vmax + 1e-30;
          worst = std::max(worst, std::fabs(o[d] - ref) / bound);
        }
      }
    }
  for (int64_t b = 0; b < B; ++b)            // the new slots: RoPE'd keys, values as given
    for (int64_t t = 0; t < new_len[b]; ++t)
      for (int64_t g = 0; g < Hkv; ++g) {
        const int64_t p = past_len[b] + t;
        rot(&k[size_t((b * S + t) * Hkv * D + g * D)], p, kr.data());
        for (int64_t d = 0; d < D; ++d) {
          const size_t at = size_t(((b * Hkv + g) * C + p) * D + d);
          if (std::fabs(pk[at] - kr[size_t(d)]) > 4 * U * (std::fabs(kr[size_t(d)]) + 1) ||
              pv[at] != v[size_t((b * S + t) * Hkv * D + g * D + d)])
            return INFINITY;
        }
      }
  return worst;
}

// A prefill of n tokens (query tiles of two) and the same tokens one decode step at a time give
// every token the same bits: its sums run in the same order either way.
bool attention_tiling_is_invisible() {
  const int64_t H = 16, Hkv = 2, D = 64, C = 32, P = 32, p0 = 5, n = 7;
  std::normal_distribution<float> nd;
  auto vec = [&](int64_t len) {
    std::vector<float> v(static_cast<size_t>(len));
    for (auto& x : v) x = nd(rng);
    return v;
  };
  const std::vector<float> q = vec(n * H * D), k = vec(n * Hkv * D), v = vec(n * Hkv * D), sinks = vec(H),
                           cs = vec(P * D / 2), sn = vec(P * D / 2), cache0 = vec(Hkv * C * D);
  const AttnShape shape{H, Hkv, D, 0.125f};
  const Engine eng{&isa_portable(), ActMode::F32, Pool{serial, nullptr}};
  std::vector<float> kc = cache0, vc = cache0, out(size_t(n * H * D));
  const int32_t past = int32_t(p0), len = int32_t(n);
  sink_attention(eng, shape, AttnArgs{1, n, C, P, q.data(), k.data(), v.data(), sinks.data(), cs.data(), sn.data(),
                                      kc.data(), vc.data(), &past, &len, out.data(), kc.data(), vc.data()});
  std::vector<float> kd = cache0, vd = cache0, step(size_t(H * D));
  for (int64_t t = 0; t < n; ++t) {
    const int32_t pt = int32_t(p0 + t), one = 1;
    sink_attention(eng, shape, AttnArgs{1, 1, C, P, &q[size_t(t * H * D)], &k[size_t(t * Hkv * D)],
                                        &v[size_t(t * Hkv * D)], sinks.data(), cs.data(), sn.data(), kd.data(),
                                        vd.data(), &pt, &one, step.data(), kd.data(), vd.data()});
    if (std::memcmp(step.data(), &out[size_t(t * H * D)], step.size() * sizeof(float)) != 0) return false;
  }
  return kc == kd && vc == vd;
}

void check_attention(Failures& f) {
  struct A {
    int64_t H, Hkv, D, p0, n0;
  };
  // gpt-oss groups (8 query heads per kv head, D 64: query tiles of 2, an odd last query), the
  // tiny model's (2, D 32), odd and wide groups (3; 12: two vectors of lanes), head sizes with
  // neither register path (20; with tiles); prefill chunks after a cache and from empty, decode.
  const A cases[] = {{16, 2, 64, 40, 19}, {16, 2, 64, 0, 1}, {4, 2, 32, 10, 7}, {6, 2, 16, 5, 4},
                     {24, 2, 32, 3, 17}, {4, 1, 20, 9, 2}, {16, 2, 20, 6, 5}};
  for (const A& c : cases) {
    const double r = run_attention(c.H, c.Hkv, c.D, c.p0, c.n0);
    f.check(r <= 1.0, "attn", "heads " + std::to_string(c.H) + "/" + std::to_string(c.Hkv) + " D=" +
            std::to_string(c.D) + " past " + std::to_string(c.p0) + " new " + std::to_string(c.n0), r);
  }
  f.check(attention_tiling_is_invisible(), "attn", "prefill tiles = decode steps, bit for bit", 0.0);
}

void check_isa(const Isa& isa, Failures& f) {
  for (const Case& c : kCases) {
    const std::string shape = "K=" + std::to_string(c.nb * 32) + " tokens=" + std::to_string(c.tokens);
    for (int int8 = 0; int8 < 2; ++int8) {
      const char* mode = int8 ? "int8" : "fp32";
      double r = run4(isa, true, int8, c);
      f.check(r <= 1.0, isa.name, std::string("mxfp4 ") + mode + " " + shape, r);
      r = run4(isa, false, int8, c);
      f.check(r <= 1.0, isa.name, std::string("int4  ") + mode + " " + shape, r);
      r = run8(isa, int8, c);
      f.check(r <= 1.0, isa.name, std::string("8-bit ") + mode + " " + shape, r);
    }
  }
  f.check(quantizers_match(isa), isa.name, "own quantizers give the portable bits", 0.0);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> names;
  for (int i = 1; i < argc; ++i) names.emplace_back(argv[i]);
  if (names.empty())
    for (const char* n : {"avx512", "avx2", "neon", "portable"})
      if (select_isa(n)) names.emplace_back(n);
  std::printf("auto selects: %s\n", select_isa("auto")->name);
  Failures f;
  check_attention(f);
  for (const std::string& n : names) {
    const Isa* isa = select_isa(n.c_str());
    if (!isa) {
      std::printf("%s: not available on this CPU\n", n.c_str());
      return 2;
    }
    check_isa(*isa, f);
  }
  std::printf("%d failed\n", f.count);
  return f.count ? 1 : 0;
}
