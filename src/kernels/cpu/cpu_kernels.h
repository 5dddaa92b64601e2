// CPU kernels: plain functions over pointers and sizes. They never throw and never see a tensor; the
// ops layer validates shapes first. Matrices are row-major; `ld*` are row strides in elements.
#pragma once

#include <cstdint>

namespace wisp::kernels::cpu {

// Threads used by the BLAS and by the kernels below.
void set_num_threads(int n);
int num_threads();
// Threads of the kernels' parallel regions started from the calling thread only (OpenMP's thread count is
// per thread: a std::thread starts from the process default, not from what set_num_threads told another).
void set_num_threads_of_this_thread(int n);

// y[m, n] = x[m, k] · w[n, k]ᵀ + bias[n]   (bias may be null)
void linear_f32(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n, int64_t k);
// Same with half-precision weights. Products are exact f16→f32 conversions accumulated in f32, so the
// result is an fp32 linear layer over the stored weights while reading half the bytes. Small m (a decode
// step) runs as a GEMV over the half weights; large m converts row blocks of w and calls the BLAS.
void linear_f16w(const float* x, const uint16_t* w, const float* bias, float* y, int64_t m, int64_t n, int64_t k);
// Same with weight-only quantised weights (kernels/cpu/quantize.h has the layouts): the product over the
// dequantised matrix, accumulated in f32. Small m dequantises in registers while it reads each weight row
// once for up to 8 rows of x; large m dequantises row blocks of w to f32 and calls the BLAS.
// int8 codes w [n, k] with per-row scales scale [n].
void linear_i8w(const float* x, const int8_t* w, const float* scale, const float* bias, float* y, int64_t m, int64_t n,
                int64_t k);
// Packed int4 codes w [n, k / 2] with per-group scales scale [n, k / group]; group is a multiple of 32 and
// divides k.
void linear_i4w(const float* x, const uint8_t* w, const float* scale, const float* bias, float* y, int64_t m, int64_t n,
                int64_t k, int64_t group);

// y[rows, cols] = (x - mean) / sqrt(var + eps) * gamma + beta, per row. y may alias x.
void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t cols, float eps);
// In place x = x · Φ(x) (the erf form of GELU).
void gelu(float* x, int64_t n);
// y[i] = a[i] + b[i]; y may alias a.
void add(const float* a, const float* b, float* y, int64_t n);
// y[rows, cols] += row[cols] for every row (a positional embedding added to a sequence).
void add_rows(float* y, const float* row_block, int64_t rows, int64_t cols);

// Gathers the k=3, padding=1 convolution windows: col[t_out, c_in * 3], col[t][c*3 + j] = x[t*stride + j - 1][c].
// x is time-major [t_in, c_in].
void im2col_k3(const float* x, float* col, int64_t t_in, int64_t c_in, int64_t t_out, int stride);

// Multi-head scaled dot-product attention for one sequence.
// q [n_q, n_head * head_dim] (row stride ldq), k and v [n_kv, n_head * head_dim] (row strides ldk, ldv),
// out [n_q, n_head * head_dim] (row stride ldo). With `causal`, query i sees keys [0, q_offset + i].
// scratch holds n_q * n_kv floats.
void attention(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv, float* out,
               int64_t ldo, int64_t n_q, int64_t n_kv, int64_t n_head, int64_t head_dim, bool causal, int64_t q_offset,
               float* scratch);

// Pre-softmax attention scores of one head: scores[n_q, n_kv] = q · kᵀ / sqrt(head_dim), the values the
// attention above feeds its softmax. q [n_q, head_dim] and k [n_kv, head_dim] point at the head's columns
// (row strides ldq, ldk). No causal mask (cross-attention). Used for word alignment, which reads a few heads.
void attention_scores(const float* q, int64_t ldq, const float* k, int64_t ldk, float* scores, int64_t n_q,
                      int64_t n_kv, int64_t head_dim);

// Single-query attention for a batch of sequences decoded in lockstep (beams, samples): query b (row b of
// q) attends over the n_kv key/value rows starting at row b · kv_stride of k and v. kv_stride 0 lets every
// query share the same keys (cross-attention); kv_stride = the cache capacity reads per-sequence caches.
// Same arithmetic per query as attention() with n_q = 1. out [batch, n_head * head_dim] (row stride ldo).
void attention_decode(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv, float* out,
                      int64_t ldo, int64_t batch, int64_t kv_stride, int64_t n_kv, int64_t n_head, int64_t head_dim);

// In place log-softmax of one row of n values.
void log_softmax(float* x /* [n] */, int64_t n);
// max_i x[i]; −inf when n = 0.
float max_value(const float* x /* [n] */, int64_t n);
// The first index of the largest value (as std::max_element); 0 when n = 0. x holds no NaN.
int64_t argmax(const float* x /* [n] */, int64_t n);
// The first index i with x[i] > threshold, or n (NaNs never are).
int64_t first_above(const float* x /* [n] */, int64_t n, float threshold);
// log Σ_i exp(x[i]) (−inf when n = 0 or every x[i] is −inf): 8-lane exponentials (exp256), the sum in double.
double log_sum_exp(const float* x /* [n] */, int64_t n);

}  // namespace wisp::kernels::cpu
