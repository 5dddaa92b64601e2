// Quantised KV caches for the decoder attention (int8 and FP8 e4m3): the cross-attention K/V of a window and
// the self-attention cache stored with 1 byte per element instead of 2, dequantised in registers by the
// attention. At batch 32 these caches are most of a decode step's memory traffic.
//
// Layout (the fp16 caches' own, 1 byte per element): per layer [batch, n_rows, ld] with K in columns [0, d)
// and V in [d, 2d) (ld ≥ 2d), heads side by side (head h = columns [h·64, (h+1)·64)); head_dim must be 64.
//
// Scales (x ≈ code · scale):
//   kI8Static   one scale per (layer, head) for K and one for V, calibrated (scale = amax / 127 over
//               calibration audio, see kv_absmax); code = clamp(round(x / scale), −127, 127).
//   kI8Dynamic  one scale per (sequence, row, head) for K and for V, computed when the row is written:
//               scale = amax of the head's 64 values / 127 (an all-zero head gets scale 0 and zero codes).
//   kFp8        e4m3 codes with static per (layer, head) scales as for kI8Static (scale = amax / 448, or 1.0),
//               saturating conversion (values beyond ±448 · scale become ±448 · scale).
// Codes round x · (1 / scale) to nearest even, in fp32 with the reciprocal rounded once (a zero scale gives
// zero codes).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace wisp::kernels::cuda {

// kF16 is the plain fp16 cache (scales unused), so that one code path can serve every cache type.
enum class KvType { kF16, kI8Static, kI8Dynamic, kFp8 };

// "f16", "int8 static", "int8 dynamic", "fp8 e4m3" (for tables and messages).
const char* kv_type_name(KvType type);

// Bytes per stored element (host and device).
__host__ __device__ constexpr int64_t kv_element_bytes(KvType type) { return type == KvType::kF16 ? 2 : 1; }

// One layer's K/V cache. `data` holds __half (kF16), int8_t (kI8Static, kI8Dynamic) or __nv_fp8_storage_t
// (kFp8) elements. ld and the batch strides are in elements, multiples of 8; data 8-byte aligned (16-byte for
// kF16). A batch stride of 0 shares one K/V (and, for kI8Dynamic, its scales) between the sequences (reads
// only). Scales of one row: K heads first, then V heads.
//
// `slot` lets the sequences of one call live anywhere in a pool of caches: sequence b reads and writes cache
// slot[b] (batch_stride and scale_batch_stride apart) instead of cache b. A decode step that batches the
// beams of several windows, or several files, passes each row's sequence slot and window slot this way; the
// indices are device memory, so a captured step replays over whatever slots the next step uploads.
struct KvView {
  KvType type = KvType::kF16;
  void* data = nullptr;            // [batch, n_rows, ld]: K in columns [0, d), V in [d, 2d)
  int64_t ld = 0;                  // ≥ 2d
  int64_t batch_stride = 0;        // between sequences
  float* scales = nullptr;         // kI8Static, kFp8: [2·n_head]; kI8Dynamic: [batch, n_rows, scale_ld]; kF16: unused
  int64_t scale_ld = 0;            // kI8Dynamic: ≥ 2·n_head
  int64_t scale_batch_stride = 0;  // kI8Dynamic
  const int32_t* slot = nullptr;   // [batch] device: the cache of sequence b is slot[b]; null: b
  // Which rows decoder_attention_quantized may load before waiting for the kernel launched just before it
  // (programmatic dependent launch: every kernel further back has finished when it starts): kNone; kAll (no
  // row written by that kernel, e.g. a window's cross-attention K/V during decode steps); kAllButNew (that
  // kernel writes only each sequence's last n_q rows below its kv_len: a decode step's self-attention after the
  // K/V append). slot and kv_len must then not be written by that kernel either.
  enum class Ready : int { kNone, kAll, kAllButNew };
  Ready ready = Ready::kNone;
};

// Quantises whole rows into the cache: cache row r of sequence b ← src[b, r, 0 : 2d) for r < rows (the
// cross-attention K/V of a window, straight from the cross-K/V GEMM). kI8Dynamic writes the rows' scales.
// src 16-byte aligned, lds and src_batch_stride multiples of 8; n_head ≤ 32 (kNotSupported beyond, here and
// in kv_append_quantized), batch · rows < 2^31.
Status kv_quantize(const __half* src /* [batch, rows, lds]: K in [0, d), V in [d, 2d) */, int64_t lds,
                   int64_t src_batch_stride, const KvView& cache, int64_t rows, int64_t batch, int64_t n_head,
                   int64_t head_dim, cudaStream_t stream);

// The quantising twin of kv_append: sequence b's new row src[b, 0 : 2d) goes to cache row row[b] (rows
// outside [0, n_rows) are skipped). Device-side positions, so a decode step stays graph-capturable.
Status kv_append_quantized(const __half* src /* [batch, lds]: K in [0, d), V in [d, 2d) */, int64_t lds,
                           const KvView& cache, const int32_t* row /* [batch] device */, int64_t n_rows, int64_t batch,
                           int64_t n_head, int64_t head_dim, cudaStream_t stream);

// decoder_attention (cuda_kernels.h) with K and V read from a quantised cache: the same queries, lengths,
// causal rule, batch-stride-0 sharing, split keys and workspace (decoder_attention_workspace_bytes). Queries
// and output are fp16; scores and the softmax are fp32, as there.
Status decoder_attention_quantized(const __half* q /* [batch, n_q, ldq] */, int64_t ldq, int64_t q_batch_stride,
                                   const KvView& kv /* [batch, n_kv, ld], or one shared */,
                                   const int32_t* kv_len /* [batch] device, or null for n_kv */, int64_t n_kv,
                                   __half* out /* [batch, n_q, ldo] */, int64_t ldo, int64_t out_batch_stride,
                                   int64_t batch, int64_t n_q, int64_t n_head, int64_t head_dim, bool causal,
                                   void* workspace /* decoder_attention_workspace_bytes, or null */,
                                   size_t workspace_bytes, cudaStream_t stream);

// Calibration: amax[h] = max(amax[h], max |K of head h|) and amax[n_head + h] likewise for V, over rows
// r < len[b] of every sequence (all rows when len is null). amax must hold non-negative values before the call
// (zero it once before the first clip); the maxima of every call, layer by layer and clip by clip, combine.
// src 16-byte aligned, ld and src_batch_stride multiples of 8.
Status kv_absmax(const __half* src /* [batch, rows, ld]: K in [0, d), V in [d, 2d) */, int64_t ld,
                 int64_t src_batch_stride, const int32_t* len /* [batch] device, or null */, int64_t rows,
                 int64_t batch, int64_t n_head, int64_t head_dim, float* amax /* [2·n_head], in/out */,
                 cudaStream_t stream);

}  // namespace wisp::kernels::cuda
