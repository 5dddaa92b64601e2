// Small-batch linear layers for the decoder step: y = x·Wᵀ for m ≤ kGemvMaxRows activation rows, with the
// weight in fp16, int8 (per output channel) or int4 (grouped along k). Every weight byte is read once for
// all m rows, so the time is the weight's size over the memory bandwidth; cuBLASLt reaches only a fraction
// of it at these shapes (docs/cuda.md). Up to kGemvMaxGroupedRows rows run as groups of kGemvMaxRows with the
// weights read once for all of them; for more, dequantise into a scratch buffer and use linear().
//
// Weight layouts (shared with the engine file and the CPU kernels), W[j, i] for output j < n, input i < k:
//   kF16: data __half [n, k];                          W[j, i] = data[j, i]
//   kI8:  data int8_t [n, k], scales float [n];        W[j, i] = data[j, i] · scales[j]
//   kI4:  data uint8_t [n, k/2], scales float [n, k/group], group 64 or 128 (k % group == 0);
//         byte (j, i/2) holds column 2·(i/2) in its low nibble and column 2·(i/2)+1 in its high nibble;
//         a nibble u ∈ [0, 15] stands for u − 8:       W[j, i] = (u − 8) · scales[j, i/group]
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kv_quant.h"

namespace wisp::kernels::cuda {

enum class WeightType : int { kF16, kI8, kI4 };

// One linear layer's weight on the device (layouts above). data must be 16-byte aligned.
struct WeightView {
  WeightType type = WeightType::kF16;
  const void* data = nullptr;     // kF16: __half [n, k]; kI8: int8_t [n, k]; kI4: uint8_t [n, k/2]
  const float* scales = nullptr;  // kI8: [n]; kI4: [n, k/group]; unused for kF16
  int group = 0;                  // kI4: 64 or 128
};

inline constexpr int64_t kGemvMaxRows = 8;
// Up to this many rows gemv() also serves, on a tensor-core kernel: one block multiplies each weight fragment, read
// and converted once, into every group of 8 rows (a folded norm keeps one group a block, further blocks reading the
// weights again from L2), so the weights stay in their stored type (int8 / int4 dequantised in registers) where a
// GEMM needs them dequantised to fp16 first. Which of the two is faster at a row count is a measurement
// (GpuWhisper::set_gemv_max_rows, docs/cuda.md).
inline constexpr int64_t kGemvMaxGroupedRows = 64;

// The share of the GPU's resident threads (percent, 1–100) that a CUDA-core GEMV's grid is sized to fill.
// At 100 (one full wave) a GEMV takes every SM's registers, so the next kernel of a decode step cannot place
// a block until this one's blocks leave, and programmatic dependent launch overlaps little; at 50 the next
// kernel's blocks are resident early and their weight loads overlap this kernel (large-v2 batch-1 step on an
// H200: 1.62 ms at 100, 1.37 at 50, 1.46 at 25; docs/cuda.md). Process-wide; `wisp bench --gemv-fill`.
inline constexpr int kDefaultGemvFill = 50;
void set_gemv_fill(int percent);
int gemv_fill();

// 9..64 rows of fp16 or int8 weights on a compute-capability-9.0 device run on the Hopper tensor-core kernel
// (gemv_sm90a.cu: wgmma, clusters of up to this many blocks splitting k); 0 sends them to the mma.sync kernel
// that every sm_80+ device runs. Process-wide; for measurements (`wisp bench --gemv-wgmma`).
inline constexpr int kDefaultGemvWgmmaCluster = 8;
void set_gemv_wgmma(int max_cluster);
int gemv_wgmma();
// Whether gemv() runs 9..64 rows of fp16 weights on that kernel on the current device (compute capability 9.0,
// set_gemv_wgmma > 0): there it is faster than cuBLASLt at these rows (docs/cuda.md), elsewhere slower.
bool gemv_half_rows_on_wgmma();

// A layer norm of each activation row folded into the product (the decoder's pre-norms: one launch fewer per
// norm). With x̂ = (x − μ)·ρ·γ + β for each row (μ its mean, ρ = 1/sqrt(variance + eps)) and d = x − x[r, 0]:
//   Σ_i W[j, i]·x̂_i = ρ·(Σ_i W[j, i]·γ_i·d_i − mean(d)·wγ[j]) + wβ[j],   wγ = W·γ, wβ = W·β (fold_norm()).
// The kernels multiply γ into the shifted activations as they read them and sum each row's d and d² alongside
// the products, so the statistics are needed only in the epilogue and nothing stands between the wait for the
// previous kernel and the first product. (Computing the normalised row first, in every block, made the step
// slower than a separate layer_norm kernel: docs/cuda.md.) The result differs from layer_norm() then a GEMV by
// rounding only: layer_norm() rounds x̂ to fp16; here the tensor-core kernel rounds γ·d to fp16.
struct RowNorm {
  const float* gamma = nullptr;    // [k]; null: no norm
  const float* w_gamma = nullptr;  // [n] Σ_i W[j, i]·gamma[i]
  const float* w_beta = nullptr;   // [n] Σ_i W[j, i]·beta[i]
  float eps = 1e-5f;
};

// w_gamma[j] = Σ_i W[j, i]·gamma[i] and w_beta[j] = Σ_i W[j, i]·beta[i] over the exactly dequantised weight (fp64
// sums rounded to fp32): the constants of a RowNorm, computed once at load. Same weight requirements as gemv().
Status fold_norm(const WeightView& w, const float* gamma /* [k] */, const float* beta /* [k] */,
                 float* w_gamma /* [n] */, float* w_beta /* [n] */, int64_t n, int64_t k, cudaStream_t stream);

// The decode step's K/V append, done by the epilogue of the QKV projection instead of a kv_append_quantized
// launch: outputs j in [col0, col0 + 2·d) of row r (K heads, then V heads) also go to row row[r] of the cache
// (sequence slot[r] when the view has slots; rows outside [0, n_rows) skipped), stored as the cache's type from
// the fp16 value the GEMV writes to y: the bytes kv_append_quantized stores from y. kF16, kI8Static and kFp8
// caches (kI8Dynamic needs a whole head's maximum for each scale: use kv_append_quantized).
struct KvAppend {
  KvView cache;
  const int32_t* row = nullptr;  // [m] device
  int64_t n_rows = 0;
  int64_t col0 = 0;   // first output column of K
  int64_t width = 0;  // 2·d
};

// Bytes of a weight of this type, data and scales (what one GEMV streams).
int64_t weight_bytes(WeightType type, int64_t n, int64_t k, int group);

// y[r, j] = act(Σ_i x̂[r, i]·W[j, i] + bias[j]) + residual[r, j] for r < m ≤ kGemvMaxGroupedRows, j < n; x̂ is
// x, or its layer norm when `norm` has a gamma; act is the erf GELU when `gelu`, else the identity. Accumulation
// and the epilogue are fp32, with one rounding to fp16 at the end. bias and residual may be null; y may alias
// residual (the in-place residual add x += W·h), not x. x must be 16-byte aligned. k must be a multiple of 8
// (kF16) or 16 (kI8); for kI4 a multiple of the group. kNotSupported
// below sm_80 (the products run on the tensor cores). Launched chained (programmatic_launch()).
// `append` (null: none) also stores the K/V columns of y into a cache (KvAppend).
Status gemv(const __half* x /* [m, k] */, const WeightView& w, const __half* bias /* [n] or null */,
            const __half* residual /* [m, n] or null */, __half* y /* [m, n] */, int64_t m, int64_t n, int64_t k,
            bool gelu, cudaStream_t stream, const RowNorm& norm = {}, const KvAppend* append = nullptr);

// y[r, j] = Σ_i x̂[r, i]·W[j, i] in fp32 (the logits: x̂ [m, d] · token_embedding [n_vocab, d]ᵀ). Same
// requirements as gemv().
Status gemv_f32_out(const __half* x /* [m, k] */, const WeightView& w, float* y /* [m, n] */, int64_t m, int64_t n,
                    int64_t k, cudaStream_t stream, const RowNorm& norm = {});

// out[j, i] = half(float(q[j, i]) · scale): the fp32 product rounded to fp16 (for many rows: dequantise into a
// scratch buffer, then linear()). A kF16 weight is copied. out must be 16-byte aligned.
Status dequantize_weight(const WeightView& w, __half* out /* [n, k] */, int64_t n, int64_t k, cudaStream_t stream);

}  // namespace wisp::kernels::cuda
