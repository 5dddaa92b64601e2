// The decode step's cross-attention together with its query projection, for one or two rows: the two launches
// that sit between the self-attention's output projection and the cross-attention's (the cross-Q GEMV and
// decoder_attention_quantized) as one. At batch 1 each of them adds ~5–7 µs to a step whatever its bytes
// (docs/cuda.md, "Where a decode step's time goes"); the fused kernel copies its share of W_q and of the
// window's K/V into shared memory before waiting for the previous kernel, so after the wait only the activation
// row is read from memory.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/kv_quant.h"

namespace wisp::kernels::cuda {

inline constexpr int64_t kCrossAttentionMaxRows = 2;

// out[b, h·64 : h·64 + 64] = softmax(q_h·K_hᵀ/8)·V_h for each row b < batch and head h, where q = W_q·x̂ + b_q,
// rounded to fp16 as the GEMV stores it, x̂ the layer norm of x[b] folded into the product (RowNorm, with the
// constants fold_norm() computed for W_q), and K, V the n_kv rows of the window cache slot cross.slot[b] (b
// without slots). Equal to gemv(x, W_q, b_q, …, norm) followed by decoder_attention_quantized over the same
// cache, up to fp32 summation order.
//
// kNotSupported (use those two instead) unless: compute capability 9.0+ (thread-block clusters), fp16 W_q and
// cache, head_dim 64, a norm, batch ≤ kCrossAttentionMaxRows, cross.ready == KvView::Ready::kAll (the kernel
// copies K/V and reads the slots before waiting for the kernel launched just before it), and the shared memory
// a block needs (its slices of W_q and of the keys) fits. Launched chained (programmatic_launch()).
Status cross_attention_with_query(const __half* x /* [batch, d] */, const WeightView& wq /* fp16 [d, d] */,
                                  const __half* bq /* [d] */, const RowNorm& norm,
                                  const KvView& cross /* fp16 [slots, n_kv, ld ≥ 2d] */, int64_t n_kv,
                                  __half* out /* [batch, d] */, int64_t batch, int64_t n_head, int64_t head_dim,
                                  cudaStream_t stream);

}  // namespace wisp::kernels::cuda
