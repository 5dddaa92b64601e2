// GEMMs through cuBLASLt: fp16 operands, fp32 accumulation, fp16 or fp32 output, bias and bias+GELU fused
// into the epilogue. Row-major throughout, like the CPU twins (linear_f16w: y[m, n] = x[m, k] · w[n, k]ᵀ).
//
// A GemmContext owns the cuBLASLt handle, a device workspace and a cache of plans (descriptors + the
// algorithm the heuristic chose, or the fastest of its candidates: set_autotune) keyed by shape, strides, types,
// epilogue and pointer alignment, so a decode loop pays the heuristic once per shape. One context per thread (it is not
// thread-safe); it may be used on any stream and inside CUDA-graph capture once its plans exist (the first call of a
// shape runs the heuristic on the host, which capture allows as well; it is not timed then).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/cuda/cuda_kernels.h"

namespace wisp::kernels::cuda {

enum class Epilogue : uint8_t {
  kNone,
  kBias,          // y = x·wᵀ + bias
  kBiasGeluTanh,  // y = gelu_tanh(x·wᵀ + bias), fused by cuBLASLt (its GELU is the tanh approximation)
  kBiasGeluErf,   // y = gelu_erf(x·wᵀ + bias): cuBLASLt bias epilogue, then add_bias_gelu's GELU (one more pass)
};

enum class DataType : uint8_t { kF16, kF32 };

class GemmContext {
 public:
  // 32 MiB: what cuBLAS recommends for Hopper.
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;

  GemmContext();
  ~GemmContext();
  GemmContext(const GemmContext&) = delete;
  GemmContext& operator=(const GemmContext&) = delete;

  // Creates the handle and the workspace on the current device. Must succeed before any GEMM.
  Status init(size_t workspace_bytes = kDefaultWorkspaceBytes);
  bool ready() const;
  // Plans cached so far (one per distinct shape/stride/type/epilogue/alignment).
  size_t cached_plans() const;
  // Autotuning (default on): the first call of a plan of at least 50 GFLOP (a few windows' encoder layers), outside
  // stream capture, times the heuristic's first 8 algorithms (three rounds, each candidate's fastest) on its own
  // operands and keeps the fastest when it is ≥ 3 % faster than the heuristic's first choice (host
  // synchronisations; a transient output buffer where the call reads C or writes over its inputs). Off: the
  // heuristic's first choice always, the same algorithm on every run.
  void set_autotune(bool on);
  // Plans whose algorithm the timing changed.
  size_t tuned_plans() const;
  // The largest transient output buffer the timing allocated (and freed) so far, bytes: device memory a peak
  // measured after the fact (cudaMemGetInfo) does not see.
  size_t peak_transient_bytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  friend struct GemmAccess;
};

// y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) (+ GELU): a linear layer, fp16 in and out, fp32 accumulation.
// ldx ≥ k and ldy ≥ n are row strides (x may be a column range of a wider buffer). bias is required by the
// bias epilogues and ignored by kNone. `accumulate`: y holds a residual on entry and the result is added to it in
// the epilogue, y ← y + x·wᵀ (+ bias), with one rounding (cuBLASLt's β = 1 with C = D = y); not with a GELU.
Status linear(GemmContext& ctx, const __half* x /* [m, ldx] */, int64_t ldx, const __half* w /* [n, k] */,
              const __half* bias /* [n] or null */, __half* y /* [m, ldy] */, int64_t ldy, int64_t m, int64_t n,
              int64_t k, Epilogue epilogue, cudaStream_t stream, bool accumulate = false);
// Contiguous x [m, k] and y [m, n].
Status linear(GemmContext& ctx, const __half* x /* [m, k] */, const __half* w /* [n, k] */,
              const __half* bias /* [n] or null */, __half* y /* [m, n] */, int64_t m, int64_t n, int64_t k,
              Epilogue epilogue, cudaStream_t stream);
// Same with an fp32 output (logits: x [m, d] · token_embedding [n_vocab, d]ᵀ). bias may be null.
Status linear_f32_out(GemmContext& ctx, const __half* x /* [m, ldx] */, int64_t ldx, const __half* w /* [n, k] */,
                      const float* bias /* [n] or null */, float* y /* [m, ldy] */, int64_t ldy, int64_t m, int64_t n,
                      int64_t k, cudaStream_t stream);

// Strided-batched GEMM, row-major: for b < batch,
//   C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b],   op(A[b]) [m, k], op(B[b]) [k, n], C[b] [m, n]
// where A[b] = a + b·stride_a is stored [m, lda] (or [k, lda] with trans_a, op = transpose) and likewise B
// ([k, ldb], or [n, ldb] with trans_b). A and B are fp16, C is fp16 or fp32, accumulation fp32.
// Attention over heads-in-columns is this with batch = n_head and stride = head_dim:
//   scores[h] = scale · Q_h · K_hᵀ  (a = q, lda = ldq, stride_a = 64; b = k, ldb = ldk, trans_b, stride_b = 64)
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  const __half* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  bool trans_a = false;
  const __half* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  bool trans_b = false;
  void* c = nullptr;  // __half* or float* by c_type
  DataType c_type = DataType::kF16;
  int64_t ldc = 0, stride_c = 0;
  float alpha = 1.0f, beta = 0.0f;
};
// Host-side check of a GemmArgs (sizes, strides, leading dimensions): kOk or kInvalidArgument.
Status gemm_can_implement(const GemmArgs& args);
Status gemm(GemmContext& ctx, const GemmArgs& args, cudaStream_t stream);

// Multi-head attention the unfused way (any head_dim): per sequence, S = scale·Q·Kᵀ over all heads at once
// (one strided-batched GEMM, fp32 scores), softmax_rows → P (fp16), O = P·V (one strided-batched GEMM).
// The fallback and the yardstick for attention(); same arguments as attention() for one sequence, plus
// scratch: n_head·n_q·n_kv floats followed by as many halves (attention_unfused_scratch_bytes).
size_t attention_unfused_scratch_bytes(int64_t n_q, int64_t n_kv, int64_t n_head);
Status attention_unfused(GemmContext& ctx, const __half* q /* [n_q, ldq] */, int64_t ldq,
                         const __half* k /* [n_kv, ldk] */, int64_t ldk, const __half* v /* [n_kv, ldv] */, int64_t ldv,
                         __half* out /* [n_q, ldo] */, int64_t ldo, int64_t n_q, int64_t n_kv, int64_t n_head,
                         int64_t head_dim, bool causal, int64_t q_offset,
                         void* scratch /* attention_unfused_scratch_bytes */, cudaStream_t stream);

}  // namespace wisp::kernels::cuda
