// The op computations on top of the ISA kernels (no ONNX Runtime here).
//   gemm_4bit: y [T, N] = x [T, K] . W^T (+ bias), W 4-bit rows (kernels.h)
//   gemm_8bit: the same with 8-bit rows (Gemm8bit)
//   moe_mxfp4: the op set's MoeMxfp4 (router, top-k softmax, gate_up, clamped SwiGLU, down,
//              weighted sum); a step reads only the selected experts' blocks.
// Work is split into row chunks run through Pool (ONNX Runtime's intra-op pool in the glue).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace gek {

enum class ActMode { F32, I8 };

struct Pool {
  // Runs fn(user, i) for every i in [0, n), possibly in parallel; returns when all are done.
  void (*parallel_for)(void* ctx, void (*fn)(void*, size_t), size_t n, void* user);
  void* ctx;
};

struct Engine {
  const Isa* isa;
  ActMode mode;
  Pool pool;
};

// f(i) for i in [0, n) on the engine's pool (in blocks of `grain` items per task).
template <class F>
void parallel(const Engine& eng, int64_t n, int64_t grain, F&& f) {
  struct Ctx {
    F* f;
    int64_t n, grain;
  } c{&f, n, grain};
  auto run = [](void* u, size_t task) {
    auto* c = static_cast<Ctx*>(u);
    const int64_t i1 = c->n < int64_t(task + 1) * c->grain ? c->n : int64_t(task + 1) * c->grain;
    for (int64_t i = int64_t(task) * c->grain; i < i1; ++i) (*c->f)(i);
  };
  if (n > 0) eng.pool.parallel_for(eng.pool.ctx, run, size_t((n + grain - 1) / grain), &c);
}

void gemm_4bit(const Engine& eng, const Rows& w, int64_t n_rows, const float* x, int64_t T,
               const float* bias, float* y);

// gemm_8bit: y [T, N] = x [T, K] . W^T (+ bias), W 8-bit rows (kernels.h Rows8).
void gemm_8bit(const Engine& eng, const Rows8& w, int64_t n_rows, const float* x, int64_t T,
               const float* bias, float* y);

struct MoeShape {
  int64_t experts, top_k, hidden, inter;
  float limit, alpha, offset;
};

struct MoeWeights {
  const float* router_w;     // [E, H]
  const float* router_b;     // [E]
  Rows gate_up;              // expert 0's rows; expert e at + e * 2I rows
  const float* gate_up_bias; // [E, 2I]
  Rows down;                 // [E, H rows]
  const float* down_bias;    // [E, H]
};

void moe_mxfp4(const Engine& eng, const MoeShape& s, const MoeWeights& w, const float* hidden,
               int64_t T, float* out);

// Rows from row0 on (same blocks/scales arrays); expert e's: from e * rows_per_expert.
Rows offset_rows(const Rows& all, int64_t row0);
Rows expert_rows(const Rows& all, int64_t e, int64_t rows_per_expert);

}  // namespace gek
