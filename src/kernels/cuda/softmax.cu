// Row reductions over logits and attention scores, one block per row. log_softmax and argmax read the row
// once for the statistics: each thread reduces register chunks of the row to a (max, Σ exp(x − max)) pair,
// pairs merge with the online-softmax rescaling, then the block merges its threads' pairs.
#include <cfloat>

#include "kernels/cuda/common.cuh"

namespace wisp::kernels::cuda {

using detail::block_max;
using detail::block_sum;
using detail::kWarp;
using detail::launch_status;

namespace {

constexpr int kThreads = 1024;
constexpr int kVec = 8;                                   // float4 per thread per chunk: 32 values in registers
constexpr int64_t kChunk = int64_t{kThreads} * kVec * 4;  // 32768 values per block step

// A decode step has one row of 51865 logits for the whole GPU, so latency matters, not bandwidth: each
// thread loads its part of a chunk with all loads in flight, then reduces it from registers in two cheap
// passes (max, then the sum of exponentials relative to it), instead of paying an exp and a rescale per
// element. Element (u, c) of a thread is index base + 4·(u·kThreads + tid) + c: increasing with (u, c), so a
// tie never replaces an earlier index. Padding is NaN, which both reductions skip.
__device__ __forceinline__ void load_chunk(const float* __restrict__ row, int64_t n, int64_t base, bool vec,
                                           float (&v)[kVec * 4]) {
#pragma unroll
  for (int u = 0; u < kVec; ++u) {
    const int64_t i0 = base + 4 * (static_cast<int64_t>(u) * kThreads + threadIdx.x);
    if (vec && i0 + 3 < n) {
      const float4 a = *reinterpret_cast<const float4*>(row + i0);
      v[4 * u] = a.x;
      v[4 * u + 1] = a.y;
      v[4 * u + 2] = a.z;
      v[4 * u + 3] = a.w;
    } else {
#pragma unroll
      for (int c = 0; c < 4; ++c) v[4 * u + c] = i0 + c < n ? row[i0 + c] : NAN;
    }
  }
}

__device__ __forceinline__ int64_t chunk_index(int64_t base, int i) {
  return base + 4 * (static_cast<int64_t>(i / 4) * kThreads + threadIdx.x) + (i % 4);
}

// Σ exp(v − m) over the non-NaN values above -inf (0 when m is -inf).
__device__ __forceinline__ float sum_exp(const float (&v)[kVec * 4], float m) {
  if (m == -INFINITY) return 0.0f;
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kVec * 4; ++i) {
    if (v[i] > -INFINITY) s += __expf(v[i] - m);
  }
  return s;
}

// The running (max, Σ exp(x − max)) of a set of values; -inf max means the set holds no finite value.
struct MaxSum {
  float m = -INFINITY;
  float s = 0.0f;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return MaxSum{};
  MaxSum r;
  r.m = m;
  r.s = (a.m > -INFINITY ? a.s * expf(a.m - m) : 0.0f) + (b.m > -INFINITY ? b.s * expf(b.m - m) : 0.0f);
  return r;
}

// Best value and its index, with the sum of exponentials relative to it. idx < 0: nothing seen yet.
struct Best {
  float v = -INFINITY;
  int idx = -1;
  float s = 0.0f;
};

__device__ __forceinline__ bool better(const Best& b, const Best& a) {  // does b beat a?
  if (b.idx < 0) return false;
  if (a.idx < 0) return true;
  return b.v > a.v || (b.v == a.v && b.idx < a.idx);
}

__device__ __forceinline__ Best merge(const Best& a, const Best& b) {
  Best r = better(b, a) ? b : a;
  if (r.v == -INFINITY) {
    r.s = 0.0f;
    return r;
  }
  r.s = (a.v > -INFINITY ? a.s * expf(a.v - r.v) : 0.0f) + (b.v > -INFINITY ? b.s * expf(b.v - r.v) : 0.0f);
  return r;
}

__device__ __forceinline__ Best shfl_xor(const Best& a, int o) {
  Best r;
  r.v = __shfl_xor_sync(0xffffffffu, a.v, o);
  r.idx = __shfl_xor_sync(0xffffffffu, a.idx, o);
  r.s = __shfl_xor_sync(0xffffffffu, a.s, o);
  return r;
}

__device__ MaxSum block_merge(MaxSum a, float* shared /* 64 floats */) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    MaxSum b;
    b.m = __shfl_xor_sync(0xffffffffu, a.m, o);
    b.s = __shfl_xor_sync(0xffffffffu, a.s, o);
    a = merge(a, b);
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  __syncthreads();
  if (lane == 0) {
    shared[warp] = a.m;
    shared[32 + warp] = a.s;
  }
  __syncthreads();
  MaxSum r;
  if (lane < warps) {
    r.m = shared[lane];
    r.s = shared[32 + lane];
  }
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    MaxSum b;
    b.m = __shfl_xor_sync(0xffffffffu, r.m, o);
    b.s = __shfl_xor_sync(0xffffffffu, r.s, o);
    r = merge(r, b);
  }
  return r;
}

__global__ void __launch_bounds__(kThreads) log_softmax_kernel(float* __restrict__ x, int64_t n, int64_t ld, bool vec) {
  __shared__ float shared[64];
  float* row = x + static_cast<int64_t>(blockIdx.x) * ld;
  MaxSum a;
  for (int64_t base = 0; base < n; base += kChunk) {
    float v[kVec * 4];
    load_chunk(row, n, base, vec, v);
    MaxSum c;
#pragma unroll
    for (int i = 0; i < kVec * 4; ++i) c.m = fmaxf(c.m, v[i]);  // fmaxf ignores NaN
    c.s = sum_exp(v, c.m);
    a = merge(a, c);
  }
  const MaxSum t = block_merge(a, shared);
  const float lse = t.m == -INFINITY ? -INFINITY : t.m + logf(t.s);
  const int64_t n4 = vec ? n / 4 : 0;
  auto* r4 = reinterpret_cast<float4*>(row);
  for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
    float4 w = r4[i];
    w.x -= lse;
    w.y -= lse;
    w.z -= lse;
    w.w -= lse;
    r4[i] = w;
  }
  for (int64_t j = 4 * n4 + threadIdx.x; j < n; j += kThreads) row[j] -= lse;
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* __restrict__ x, int64_t n, int64_t ld, bool vec,
                                                          int32_t* __restrict__ index, float* __restrict__ logprob) {
  detail::wait_prior_kernels();
  detail::allow_next_kernel();
  __shared__ float sv[32], ss[32];
  __shared__ int si[32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * ld;
  Best a;
  for (int64_t base = 0; base < n; base += kChunk) {
    float v[kVec * 4];
    load_chunk(row, n, base, vec, v);
    Best c;
#pragma unroll
    for (int i = 0; i < kVec * 4; ++i) {
      if (v[i] > c.v || (c.idx < 0 && v[i] == c.v)) {  // NaN fails both comparisons
        c.v = v[i];
        c.idx = static_cast<int>(chunk_index(base, i));
      }
    }
    c.s = sum_exp(v, c.v);
    a = merge(a, c);
  }
  for (int o = kWarp / 2; o > 0; o >>= 1) a = merge(a, shfl_xor(a, o));
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) {
    sv[warp] = a.v;
    si[warp] = a.idx;
    ss[warp] = a.s;
  }
  __syncthreads();
  if (warp == 0) {
    Best r;
    if (lane < kThreads / kWarp) {
      r.v = sv[lane];
      r.idx = si[lane];
      r.s = ss[lane];
    }
    for (int o = kWarp / 2; o > 0; o >>= 1) r = merge(r, shfl_xor(r, o));
    if (lane == 0) {
      index[blockIdx.x] = r.idx < 0 ? 0 : r.idx;
      // x[idx] − (max + log Σ exp(x − max)) with x[idx] = max.
      if (logprob) logprob[blockIdx.x] = r.v == -INFINITY || r.idx < 0 ? -INFINITY : -logf(r.s);
    }
  }
}

__global__ void __launch_bounds__(256)
    softmax_rows_kernel(const float* __restrict__ s, __half* __restrict__ p, int64_t n, float scale, bool causal,
                        int64_t q_offset, int64_t rows_per_head) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const float* in = s + r * n;
  __half* out = p + r * n;
  const int64_t visible = causal ? min(n, q_offset + r % rows_per_head + 1) : n;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) m = fmaxf(m, in[j] * scale);
  m = block_max(m, shared);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) sum += expf(in[j] * scale - m);
  sum = block_sum(sum, shared);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    out[j] = __float2half_rn(j < visible ? expf(in[j] * scale - m) * inv : 0.0f);
  }
}

}  // namespace

Status log_softmax(float* x, int64_t rows, int64_t n, int64_t ld, cudaStream_t stream) {
  if (rows < 0 || n <= 0 || ld < n || rows > INT32_MAX) return Status::kInvalidArgument;
  if (rows == 0) return Status::kOk;
  if (!x) return Status::kInvalidArgument;
  const bool vec = ld % 4 == 0 && (reinterpret_cast<uintptr_t>(x) & 15u) == 0;
  log_softmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, n, ld, vec);
  return launch_status();
}

Status argmax(const float* x, int64_t rows, int64_t n, int64_t ld, int32_t* index, float* logprob,
              cudaStream_t stream) {
  if (rows < 0 || n <= 0 || ld < n || rows > INT32_MAX || n > INT32_MAX) return Status::kInvalidArgument;
  if (rows == 0) return Status::kOk;
  if (!x || !index) return Status::kInvalidArgument;
  const bool vec = ld % 4 == 0 && (reinterpret_cast<uintptr_t>(x) & 15u) == 0;
  return detail::launch_chained(argmax_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, 1u, x, n,
                                ld, vec, index, logprob);
}

Status softmax_rows(const float* s, __half* p, int64_t rows, int64_t n, float scale, bool causal, int64_t q_offset,
                    int64_t rows_per_head, cudaStream_t stream) {
  if (rows < 0 || n <= 0 || rows > INT32_MAX || q_offset < 0 || rows_per_head <= 0) return Status::kInvalidArgument;
  if (rows == 0) return Status::kOk;
  if (!s || !p) return Status::kInvalidArgument;
  softmax_rows_kernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(s, p, n, scale, causal, q_offset, rows_per_head);
  return launch_status();
}

}  // namespace wisp::kernels::cuda
