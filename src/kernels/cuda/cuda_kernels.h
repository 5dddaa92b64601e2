// CUDA kernels: the GPU twins of src/kernels/cpu. Plain functions over device pointers and sizes, launched
// on the given stream; they never throw, never allocate, never synchronise, and return a Status (launch
// errors included: a kernel that faults later shows up at the next synchronisation, as usual in CUDA).
//
// Storage is fp16 (`__half`) for activations and weights; arithmetic is fp32 (accumulators, LayerNorm and
// softmax statistics). Matrices are row-major; `ld*` are row strides in elements and `*_batch_stride` the
// distance between consecutive sequences of a batch. Every pointer argument carries its shape.
//
// GEMMs live in gemm.h (cuBLASLt); everything here is a hand-written kernel.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace wisp::kernels::cuda {

enum class Status : int {
  kOk = 0,
  kInvalidArgument,  // a size, stride or pointer the kernel cannot take (checked on the host, before launch)
  kNotSupported,     // a valid request this build or device does not implement (e.g. head_dim != 64)
  kCudaError,        // a CUDA runtime call or a launch failed
  kCublasError,      // cuBLASLt refused or failed
  kOutOfMemory,
};
const char* status_name(Status s);

// True when the CUDA runtime sees at least one device (cudaGetDeviceCount succeeds and returns > 0).
bool device_available();

// Programmatic dependent launch (sm_90+; on by default): the kernels of a decoder step (embedding, norms,
// GEMVs, K/V appends, decoder attention, argmax, position update) are launched so that each may start while
// the kernel before it in the stream finishes, and read its constant operands (weights) before waiting for
// the earlier kernels' results. Off: every kernel waits for the one before it to finish, as a plain launch
// does (for measurements). Process-wide; set it before capturing CUDA graphs.
void set_programmatic_launch(bool on);
bool programmatic_launch();

// ---------------------------------------------------------------------------------------------------------
// Conversions and element-wise ops

// y[i] = float(x[i])
Status f16_to_f32(const __half* x /* [n] */, float* y /* [n] */, int64_t n, cudaStream_t stream);
// y[i] = half(x[i]), round to nearest even
Status f32_to_f16(const float* x /* [n] */, __half* y /* [n] */, int64_t n, cudaStream_t stream);

// In place x = x · Φ(x), the erf form of GELU (Whisper's), computed in fp32.
Status gelu(__half* x /* [n] */, int64_t n, cudaStream_t stream);
// In place y[r, c] = act(y[r, c] + bias[c]) for r < rows, c < cols; act is the erf GELU when `apply_gelu`,
// else the identity. bias may be null. The epilogue of a GEMM that did not fuse it.
Status add_bias_gelu(__half* y /* [rows, ldy] */, const __half* bias /* [cols] or null */, int64_t rows, int64_t cols,
                     int64_t ldy, bool apply_gelu, cudaStream_t stream);
// y[i] = a[i] + b[i] (fp32 add, one rounding); y may alias a or b.
Status add(const __half* a /* [n] */, const __half* b /* [n] */, __half* y /* [n] */, int64_t n, cudaStream_t stream);
// y[b, r, c] += block[r, c] for every sequence b of the batch (the encoder's positional embedding).
Status add_rows(__half* y /* [batch, rows, cols] */, const __half* block /* [rows, cols] */, int64_t batch,
                int64_t rows, int64_t cols, cudaStream_t stream);

// out[i, :] = token_embedding[tokens[i], :] + positional[positions[i], :] (fp32 add, one rounding).
// Ids outside [0, n_vocab) or positions outside [0, n_ctx) give a zero row (the host validates tokens; the
// kernel only refuses to read out of bounds).
Status embed_tokens(const int32_t* tokens /* [n] */, const int32_t* positions /* [n] */,
                    const __half* token_embedding /* [n_vocab, d] */, const __half* positional /* [n_ctx, d] */,
                    __half* out /* [n, d] */, int64_t n, int64_t d, int64_t n_vocab, int64_t n_ctx,
                    cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------
// Layer norm: y = (x - mean) / sqrt(var + eps) · gamma + beta per row, statistics in fp32 (two passes over
// the row held in shared memory). cols ≤ 12288.

Status layer_norm(const __half* x /* [rows, cols] */, const float* gamma /* [cols] */, const float* beta /* [cols] */,
                  __half* y /* [rows, cols] */, int64_t rows, int64_t cols, float eps, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------
// Convolution windows (k = 3, padding 1), so that a conv1d is one GEMM with w [c_out, c_in · 3].
// col[b, t, c·3 + j] = x[b, t·stride + j − 1, c] (zero outside [0, t_in)).

Status im2col_k3(const __half* x /* [batch, t_in, c_in], time-major */, __half* col /* [batch, t_out, c_in · 3] */,
                 int64_t batch, int64_t t_in, int64_t c_in, int64_t t_out, int stride, cudaStream_t stream);
// Same over an fp32 log-mel in its natural channel-major layout: col[b, t, c·3 + j] = half(mel[b, c, t·stride + j −
// 1]).
Status im2col_k3_mel(const float* mel /* [batch, c_in, t_in] */, __half* col /* [batch, t_out, c_in · 3] */,
                     int64_t batch, int64_t t_in, int64_t c_in, int64_t t_out, int stride, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------
// Attention. Heads live side by side in the columns: head h of a row is columns [h·head_dim, (h+1)·head_dim),
// so q, k and v can be column ranges of one fused QKV output (ld = 3·d) or of a cross K/V buffer (ld = 2·d).
// Scores are scaled by 1/sqrt(head_dim).

// Fused multi-head attention for many queries (the encoder: 1500 × 1500, or a prompt), flash-attention
// style: tensor-core mma.sync (fp16 in, fp32 accumulate), online softmax in fp32, the score matrix never
// leaves the chip (wgmma on compute capability 9.0: set_attention_wgmma). head_dim must be 64; ld* and batch
// strides multiples of 8 and pointers 16-byte aligned. With `causal`, query i sees keys [0, q_offset + i]
// (q_offset ≥ 0). Needs sm_80 or newer.
Status attention(const __half* q /* [batch, n_q, ldq] */, int64_t ldq, int64_t q_batch_stride,
                 const __half* k /* [batch, n_kv, ldk] */, int64_t ldk, int64_t k_batch_stride,
                 const __half* v /* [batch, n_kv, ldv] */, int64_t ldv, int64_t v_batch_stride,
                 __half* out /* [batch, n_q, ldo] */, int64_t ldo, int64_t out_batch_stride, int64_t batch, int64_t n_q,
                 int64_t n_kv, int64_t n_head, int64_t head_dim, bool causal, int64_t q_offset, cudaStream_t stream);

// Whether attention() runs calls of more than 64 queries on a compute-capability-9.0 device on the wgmma kernel
// (default) or on the mma.sync kernel every other device runs (process-wide; measurement and tests).
void set_attention_wgmma(bool on);
bool attention_wgmma();

// Attention for a decode step: 1..kDecoderMaxQueries new queries per sequence, a batch of sequences, each
// over its own number of keys kv_len[b] ≤ n_kv (the self-attention KV cache, whose length already counts
// the new tokens) or over all n_kv keys when kv_len is null (cross-attention over the 1500 audio frames).
// With `causal`, query i of sequence b sees keys [0, kv_len[b] − n_q + i]. A batch stride of 0 shares one
// K/V between the sequences (beams of one window).
//
// The keys are split over several blocks when batch · n_head alone cannot fill the GPU ("flash decoding");
// the partial results go to `workspace` and the last block of each (sequence, head) merges them, so a call
// is one launch. The workspace (decoder_attention_workspace_bytes for the largest batch, n_q and n_kv it
// will serve) must be zeroed once after allocation (decoder_attention_workspace_init); every call leaves its
// counters zeroed again, so calls of any batch size can follow each other. One workspace per stream:
// concurrent calls must not share it. With no workspace (null or too
// small) every (sequence, head) runs in one block: correct, slower at batch 1.
// head_dim must be 64; ld*, batch strides multiples of 8; pointers 16-byte aligned.
inline constexpr int64_t kDecoderMaxQueries = 8;
// Whether decoder_attention (and decoder_attention_quantized) may run its products on the tensor cores (mma.sync,
// sm_80+; default: every call but the large cross-attentions, decoder_attention.cu) or runs all of them on the
// CUDA cores (process-wide; measurement and tests). The two differ in rounding only.
void set_decoder_attention_mma(bool on);
bool decoder_attention_mma();
size_t decoder_attention_workspace_bytes(int64_t batch, int64_t n_q, int64_t n_head, int64_t n_kv);
Status decoder_attention_workspace_init(void* workspace, size_t workspace_bytes, cudaStream_t stream);
Status decoder_attention(const __half* q /* [batch, n_q, ldq] */, int64_t ldq, int64_t q_batch_stride,
                         const __half* k /* [batch, n_kv, ldk] */, int64_t ldk, int64_t k_batch_stride,
                         const __half* v /* [batch, n_kv, ldv] */, int64_t ldv, int64_t v_batch_stride,
                         const int32_t* kv_len /* [batch] device, or null for n_kv */, int64_t n_kv,
                         __half* out /* [batch, n_q, ldo] */, int64_t ldo, int64_t out_batch_stride, int64_t batch,
                         int64_t n_q, int64_t n_head, int64_t head_dim, bool causal,
                         void* workspace /* decoder_attention_workspace_bytes, or null */, size_t workspace_bytes,
                         cudaStream_t stream);

// Row softmax for the unfused attention path: p[r, j] = softmax_j(scale · s[r, j]) over the keys row r sees
// (all n, or with `causal` keys [0, q_offset + r % rows_per_head]); other entries get 0.
Status softmax_rows(const float* s /* [rows, n] */, __half* p /* [rows, n] */, int64_t rows, int64_t n, float scale,
                    bool causal, int64_t q_offset, int64_t rows_per_head, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------
// Decoder-step state on the device (decode_state.cu), so that a step can be captured in a CUDA graph.
// cache[b · cache_batch_stride + row[b] · ldc + c] = src[b · lds + c] for c < cols: appends each sequence's new
// K/V row at its own position (rows outside [0, n_rows) are skipped; the host validates lengths).
Status kv_append(const __half* src /* [batch, lds] */, int64_t lds, __half* cache /* [batch, n_rows, ldc] */,
                 int64_t cache_batch_stride, int64_t ldc, const int32_t* row /* [batch] device */, int64_t n_rows,
                 int64_t cols, int64_t batch, cudaStream_t stream);
// a[i] += value and, when b is not null, b[i] += value (advances positions and cache lengths after a step).
Status add_scalar_i32(int32_t* a /* [n] */, int32_t* b /* [n] or null */, int64_t n, int32_t value,
                      cudaStream_t stream);
// ---------------------------------------------------------------------------------------------------------
// Logits

// In place log-softmax of each row (fp32, max-subtracted, the sum in fp32 over a block reduction).
Status log_softmax(float* x /* [rows, ld] */, int64_t rows, int64_t n, int64_t ld, cudaStream_t stream);
// index[r] = argmax_j x[r, j] (the lowest index among equal maxima; NaN never wins), and when logprob is not
// null logprob[r] = x[r, index[r]] − logsumexp_j x[r, j], the log-probability of the chosen token. One pass.
Status argmax(const float* x /* [rows, ld] */, int64_t rows, int64_t n, int64_t ld, int32_t* index /* [rows] */,
              float* logprob /* [rows] or null */, cudaStream_t stream);

}  // namespace wisp::kernels::cuda
