#include <cblas.h>
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"

namespace wisp::kernels::cpu {

namespace {

// Queries at or below this count (a decode step) run as per-head loops; more go through the BLAS.
constexpr int64_t kSmallQueries = 4;

void softmax_row(float* s, int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n8; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j));
  float lanes[8];
  _mm256_storeu_ps(lanes, vmax);
  float mx = -INFINITY;
  for (float v : lanes) mx = std::max(mx, v);
  for (int64_t j = n8; j < n; ++j) mx = std::max(mx, s[j]);

  const __m256 m = _mm256_set1_ps(mx);
  __m256 vsum = _mm256_setzero_ps();
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
    _mm256_storeu_ps(s + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  _mm256_storeu_ps(lanes, vsum);
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  for (int64_t j = n8; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

// Dot product of two head_dim vectors.
inline float dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  float s = 0.0f;
  for (float v : lanes) s += v;
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void attention(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv, float* out,
               int64_t ldo, int64_t n_q, int64_t n_kv, int64_t n_head, int64_t head_dim, bool causal, int64_t q_offset,
               float* scratch) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  if (n_q <= kSmallQueries) {
#pragma omp parallel
    {
      std::vector<float> s(static_cast<size_t>(n_kv));
#pragma omp for schedule(static) collapse(2)
      for (int64_t h = 0; h < n_head; ++h) {
        for (int64_t i = 0; i < n_q; ++i) {
          const float* qi = q + i * ldq + h * head_dim;
          const int64_t len = causal ? std::min(n_kv, q_offset + i + 1) : n_kv;
          for (int64_t j = 0; j < len; ++j) {
            const float* kj = k + j * ldk + h * head_dim;
            s[j] = dot(qi, kj, head_dim) * scale;
          }
          softmax_row(s.data(), len);
          float* oi = out + i * ldo + h * head_dim;
          for (int64_t d = 0; d < head_dim; ++d) oi[d] = 0.0f;
          for (int64_t j = 0; j < len; ++j) {
            const float* vj = v + j * ldv + h * head_dim;
            const float p = s[j];
            for (int64_t d = 0; d < head_dim; ++d) oi[d] += p * vj[d];
          }
        }
      }
    }
    return;
  }
  for (int64_t h = 0; h < n_head; ++h) {
    // scratch[n_q, n_kv] = scale · Q_h · K_hᵀ
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_q), static_cast<int>(n_kv),
                static_cast<int>(head_dim), scale, q + h * head_dim, static_cast<int>(ldq), k + h * head_dim,
                static_cast<int>(ldk), 0.0f, scratch, static_cast<int>(n_kv));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n_q; ++i) {
      float* s = scratch + i * n_kv;
      const int64_t len = causal ? std::min(n_kv, q_offset + i + 1) : n_kv;
      softmax_row(s, len);
      for (int64_t j = len; j < n_kv; ++j) s[j] = 0.0f;
    }
    // out_h[n_q, head_dim] = P · V_h
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n_q), static_cast<int>(head_dim),
                static_cast<int>(n_kv), 1.0f, scratch, static_cast<int>(n_kv), v + h * head_dim, static_cast<int>(ldv),
                0.0f, out + h * head_dim, static_cast<int>(ldo));
  }
}

void attention_scores(const float* q, int64_t ldq, const float* k, int64_t ldk, float* scores, int64_t n_q,
                      int64_t n_kv, int64_t head_dim) {
  // The same product and scale as the BLAS path of attention(), so the scores are the ones it normalises.
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_q), static_cast<int>(n_kv),
              static_cast<int>(head_dim), scale, q, static_cast<int>(ldq), k, static_cast<int>(ldk), 0.0f, scores,
              static_cast<int>(n_kv));
}

void attention_decode(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv, float* out,
                      int64_t ldo, int64_t batch, int64_t kv_stride, int64_t n_kv, int64_t n_head, int64_t head_dim) {
  // The same arithmetic as the small-query path of attention() (dot, softmax_row, the weighted sum in the
  // same order), so a sequence decoded in a batch gets bitwise the values it gets decoded alone. Heads are
  // the outer loop: with shared keys (kv_stride 0, cross-attention) a head's keys stay in cache for every
  // query of the batch.
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
#pragma omp parallel
  {
    std::vector<float> s(static_cast<size_t>(n_kv));
#pragma omp for schedule(static) collapse(2)
    for (int64_t h = 0; h < n_head; ++h) {
      for (int64_t b = 0; b < batch; ++b) {
        const float* qb = q + b * ldq + h * head_dim;
        const float* kb = k + b * kv_stride * ldk + h * head_dim;
        const float* vb = v + b * kv_stride * ldv + h * head_dim;
        for (int64_t j = 0; j < n_kv; ++j) s[j] = dot(qb, kb + j * ldk, head_dim) * scale;
        softmax_row(s.data(), n_kv);
        float* ob = out + b * ldo + h * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) ob[d] = 0.0f;
        for (int64_t j = 0; j < n_kv; ++j) {
          const float* vj = vb + j * ldv;
          const float p = s[j];
          for (int64_t d = 0; d < head_dim; ++d) ob[d] += p * vj[d];
        }
      }
    }
  }
}

}  // namespace wisp::kernels::cpu
