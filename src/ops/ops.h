// Tensor operations: validate shapes and dtypes, pick the backend, call the kernel. This is the only
// layer that sees every backend; the model composes these and never touches a kernel directly.
#pragma once

#include <span>

#include "core/tensor.h"

namespace wisp::ops {

using core::Tensor;

void set_num_threads(int n);
int num_threads();                           // of the calling thread
void set_num_threads_of_this_thread(int n);  // see kernels::cpu::set_num_threads_of_this_thread

// x [m, k] · w [n, k]ᵀ + bias [n] → y [m, n]. w is f32 or f16; x, bias and y are f32.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);
// Same, writing into the given rows-major y [m, n].
void linear_into(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);
// The same product over a weight that may be weight-only quantised (docs/quantization.md), dispatched on
// w's type: f32/f16 w [n, k] with w_scale undefined; int8 codes w i8 [n, k] with per-row scales w_scale
// f32 [n]; packed int4 codes w u8 [n, k / 2] with per-group scales w_scale f32 [n, k / group], the group
// size k / w_scale.dim(1) a multiple of 32.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& w_scale, const Tensor& bias);

// A weight-only quantised matrix: the codes and their scales, as the engine file stores them.
struct QuantizedWeight {
  Tensor codes;  // int8: i8 [n, k]; int4: u8 [n, k / 2], two columns a byte (low nibble first)
  Tensor scale;  // int8: f32 [n]; int4: f32 [n, k / group]
};
// Symmetric int8 with one scale per output channel of w [n, k] (f32, f16 or bf16).
QuantizedWeight quantize_int8(const Tensor& w);
// Symmetric int4 with one scale per `group` consecutive inputs of w [n, k] (f32, f16 or bf16); group is 64
// or 128 and divides k.
QuantizedWeight quantize_int4(const Tensor& w, int64_t group);

// The same formats with the codes chosen by GPTQ (kernels/cpu/quantize.h) instead of plain rounding, from the
// Gram matrix E[x xᵀ] of the layer's inputs, gram f32 [k, k] (symmetric; `wisp calibrate --input-gram`). Throws
// InternalError for mismatched sizes and when the damped gram is not positive definite.
QuantizedWeight gptq_int8(const Tensor& w, const Tensor& gram);
QuantizedWeight gptq_int4(const Tensor& w, const Tensor& gram, int64_t group);
// gram f32 [k, k] += xᵀ·x over the rows of x [n, k] f32, upper triangle only (the lower one is left as it is).
void add_gram_upper(const Tensor& x, Tensor& gram);

// Row-wise layer normalisation of x [m, d] with gamma [d], beta [d].
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps = 1e-5f);
// In place GELU (erf form).
void gelu_(Tensor& x);
// y += x, element-wise, same shape.
void add_(Tensor& y, const Tensor& x);

// Conv1d with kernel 3, padding 1, over time-major x [t_in, c_in] with w [c_out, c_in, 3], bias [c_out],
// then GELU: → [t_out, c_out], t_out = (t_in - 1) / stride + 1.
Tensor conv1d_gelu(const Tensor& x, const Tensor& w, const Tensor& bias, int stride);

// A column range [col, col + width) of the rows [0, rows) of a 2-D f32 tensor: q, k and v live side by
// side in fused projection outputs.
struct Columns {
  const Tensor* t;
  int64_t col;
  int64_t rows;
};

// Multi-head attention: q [n_q, width], k and v [n_kv, width] as column ranges of width `width`
// = n_head · head_dim → out [n_q, width]. With `causal`, query i sees keys [0, q_offset + i].
Tensor attention(Columns q, Columns k, Columns v, int64_t width, int64_t n_head, bool causal, int64_t q_offset);

// Pre-softmax scores of head `head` of that attention (no causal mask): q [n_q, width], k [n_kv, width]
// → [n_q, n_kv] = q_h · k_hᵀ / sqrt(width / n_head). Word alignment reads these for a few cross-attention heads.
Tensor attention_scores(Columns q, Columns k, int64_t width, int64_t n_head, int64_t head);

// One decode step of a batch of sequences: query b (row b of q [batch, width]) attends over the n_kv
// key/value rows starting at row b · kv_stride of k and v (column ranges of width `width`). kv_stride 0:
// every query reads the same keys (cross-attention over one window); kv_stride = capacity: per-sequence
// self-attention caches stacked in one tensor. → out [batch, width]. Per query, the same arithmetic as
// attention() with one query.
Tensor attention_decode(Columns q, Columns k, Columns v, int64_t width, int64_t n_head, int64_t kv_stride,
                        int64_t n_kv);

// Copies rows of src [n, width] (a column range) into dst rows [row, row + n) of a 2-D f32 tensor.
void copy_rows(Columns src, int64_t width, Tensor& dst, int64_t row);

// In place log-softmax of one host row of logits.
void log_softmax_(std::span<float> row);
// The largest value of a host row (−inf when empty), and its first index (std::max_element's; no NaN).
float max_value(std::span<const float> row);
int64_t argmax(std::span<const float> row);
// The first index i with row[i] > threshold, or row.size().
int64_t first_above(std::span<const float> row, float threshold);
// log Σ exp(row[i]) (−inf when empty or all −inf).
double log_sum_exp(std::span<const float> row);

// Host f32 copy of any f32/f16/bf16 tensor (weights that kernels read as f32).
Tensor to_f32(const Tensor& t);

}  // namespace wisp::ops
