// choose_tokens (token_select.h): one block per row. The row stays in L2 between the passes (a step's rows
// are at most a few MB), so each pass simply re-reads it: the masks in place, the timestamp test's two maxima
// and sum, the log-softmax statistics, then the choice. The sums are in double, as the host's are, so the
// tests' borderline cases (timestamps against text, the sampling walk) decide as on the host.
#include <climits>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/token_select.h"

namespace wisp::kernels::cuda {

using detail::block_max;
using detail::kWarp;
using detail::launch_status;

namespace {

constexpr int kThreads = 512;

// A candidate token in the choice order: larger logit first, then the lower id. {−inf, INT_MAX} is "none",
// after every real entry; NaN compares false both ways and so is never chosen.
struct Entry {
  float value;
  int id;
};
__device__ __forceinline__ bool before(const Entry& a, const Entry& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

__device__ __forceinline__ Entry warp_first(Entry e) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const Entry other{__shfl_xor_sync(0xffffffffu, e.value, o), __shfl_xor_sync(0xffffffffu, e.id, o)};
    if (before(other, e)) e = other;
  }
  return e;
}

// The first entry of the block in the choice order; every thread gets it.
__device__ __forceinline__ Entry block_first(Entry e, Entry* shared /* [32] */) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  e = warp_first(e);
  __syncthreads();
  if (lane == 0) shared[warp] = e;
  __syncthreads();
  e = lane < kThreads / kWarp ? shared[lane] : Entry{-INFINITY, INT_MAX};
  return warp_first(e);
}

using DoubleReduce = cub::BlockReduce<double, kThreads>;
using DoubleScan = cub::BlockScan<double, kThreads>;

// Σ over the block of a double; every thread gets it.
__device__ __forceinline__ double block_sum_double(double v, typename DoubleReduce::TempStorage& tmp, double* out) {
  const double s = DoubleReduce(tmp).Sum(v);
  if (threadIdx.x == 0) *out = s;
  __syncthreads();
  const double r = *out;
  __syncthreads();  // tmp and out may be reused right away
  return r;
}

// Σ_{i ∈ [b, e), x[i] > −inf} exp(x[i] − m) in double over float exponentials (the host's sum_exp).
__device__ __forceinline__ double thread_sum_exp(const float* x, int b, int e, float m) {
  double s = 0.0;
  if (m == -INFINITY) return s;
  for (int i = b + static_cast<int>(threadIdx.x); i < e; i += kThreads) {
    if (x[i] > -INFINITY) s += static_cast<double>(__expf(x[i] - m));
  }
  return s;
}

__device__ __forceinline__ float thread_max(const float* x, int b, int e) {
  float m = -INFINITY;
  for (int i = b + static_cast<int>(threadIdx.x); i < e; i += kThreads) m = fmaxf(m, x[i]);
  return m;
}

__global__ void __launch_bounds__(kThreads)
    choose_tokens_kernel(float* __restrict__ logits, int n, int64_t ld, const TokenQueryRow* __restrict__ queries,
                         const int2* __restrict__ ranges, int32_t* __restrict__ ids, float* __restrict__ logprobs) {
  __shared__ float red[kWarp];
  __shared__ Entry firsts[kWarp];
  __shared__ typename DoubleReduce::TempStorage reduce_tmp;
  __shared__ typename DoubleScan::TempStorage scan_tmp;
  __shared__ double broadcast;
  __shared__ int pick, last;

  const int64_t row = blockIdx.x;
  const TokenQueryRow q = queries[row];
  float* x = logits + row * ld;
  int32_t* out_ids = ids + row * kMaxTopTokens;
  float* out_lp = logprobs + row * kMaxTopTokens;

  // 1. the forbidden ranges
  for (int r = 0; r < q.n_ranges; ++r) {
    const int2 range = ranges[q.first_range + r];
    const int b = max(range.x, 0), e = min(range.y, n);
    for (int i = b + static_cast<int>(threadIdx.x); i < e; i += kThreads) x[i] = -INFINITY;
  }
  __syncthreads();

  // 2. the timestamp test: text ids below `lo` count as forbidden from here on
  int lo = 0;
  if (q.timestamp_begin >= 0 && q.timestamp_begin <= n) {
    const int ts = q.timestamp_begin;
    const float max_text = block_max(thread_max(x, 0, ts), red);
    const float max_ts = block_max(thread_max(x, ts, n), red);
    const double sum_ts = block_sum_double(thread_sum_exp(x, ts, n, max_ts), reduce_tmp, &broadcast);
    const double lse_ts =
        max_ts == -INFINITY ? -static_cast<double>(INFINITY) : static_cast<double>(max_ts) + log(sum_ts);
    if (lse_ts > static_cast<double>(max_text)) lo = ts;
  }

  // 3. the log-softmax over [lo, n): lp = x − lse, lse = max + log Σ exp(x − max) (fp32 max, double sum)
  const float mx = block_max(thread_max(x, lo, n), red);
  if (mx == -INFINITY) {
    if (threadIdx.x == 0) out_ids[0] = -1, out_lp[0] = -INFINITY;
    return;
  }
  const double sum = block_sum_double(thread_sum_exp(x, lo, n, mx), reduce_tmp, &broadcast);
  const float lse = mx + static_cast<float>(log(sum));

  if (q.temperature > 0) {
    // 4a. sampling: each thread walks a contiguous chunk; the block scan of the chunks' weights gives each
    // walk its starting sum, and the lowest crossing id wins (the last finite id if rounding leaves none).
    const float max_lp = mx - lse;
    const double inv_t = 1.0 / q.temperature;
    const int chunk = (n - lo + kThreads - 1) / kThreads;
    const int b = lo + static_cast<int>(threadIdx.x) * chunk, e = min(b + chunk, n);
    double w = 0.0;
    for (int i = b; i < e; ++i) {
      if (x[i] > -INFINITY) w += exp(static_cast<double>((x[i] - lse) - max_lp) * inv_t);
    }
    if (threadIdx.x == 0) pick = INT_MAX, last = -1;
    double prefix = 0.0, total = 0.0;
    DoubleScan(scan_tmp).ExclusiveSum(w, prefix, total);
    __syncthreads();
    const double u = q.uniform * total;
    double cum = prefix;
    int my_last = -1;
    for (int i = b; i < e; ++i) {
      if (x[i] == -INFINITY) continue;
      cum += exp(static_cast<double>((x[i] - lse) - max_lp) * inv_t);
      my_last = i;
      if (cum > u) {
        atomicMin(&pick, i);
        break;
      }
    }
    atomicMax(&last, my_last);
    __syncthreads();
    if (threadIdx.x == 0) {
      const int id = pick != INT_MAX ? pick : last;
      out_ids[0] = id;
      out_lp[0] = x[id] - lse;
    }
    return;
  }

  // 4b. the `top` first entries in the choice order, one block-wide pass each: every pass takes the first
  // entry after the previous one
  Entry prev{INFINITY, -1};
  const int top = min(max(q.top, 1), kMaxTopTokens);
  for (int j = 0; j < top; ++j) {
    Entry mine{-INFINITY, INT_MAX};
    for (int i = static_cast<int>(threadIdx.x); i < n; i += kThreads) {
      const Entry c{i < lo ? -INFINITY : x[i], i};
      if (before(prev, c) && before(c, mine)) mine = c;
    }
    prev = block_first(mine, firsts);
    if (threadIdx.x == 0) {
      out_ids[j] = prev.id == INT_MAX ? -1 : prev.id;
      out_lp[j] = prev.value - lse;
    }
  }
}

}  // namespace

Status choose_tokens(float* logits, int64_t rows, int64_t n, int64_t ld, const TokenQueryRow* queries,
                     const int2* ranges, int32_t* ids, float* logprobs, cudaStream_t stream) {
  if (rows < 0 || n < 1 || n >= INT_MAX || ld < n || !logits || !queries || !ids || !logprobs) {
    return Status::kInvalidArgument;
  }
  if (rows == 0) return Status::kOk;
  choose_tokens_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, static_cast<int>(n), ld, queries,
                                                                             ranges, ids, logprobs);
  return launch_status();
}

}  // namespace wisp::kernels::cuda
