// Layer norm: the mean, then the variance of the centred values (no E[x²] − E[x]² cancellation), then one
// write. Rows of up to 2048 columns: one warp per row from registers (layer_norm_warp_kernel; with many rows, warps
// that walk rows, layer_norm_rows_kernel); wider rows: one block per row, the row read once into shared memory
// (fp32), two block reductions.
#include <algorithm>
#include <atomic>

#include "kernels/cuda/common.cuh"

namespace wisp::kernels::cuda {

using detail::block_sum;
using detail::launch_status;
using detail::unpack8;

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxCols = 12288;  // the row in fp32 fits the default 48 KiB of shared memory

__global__ void __launch_bounds__(kThreads)
    layer_norm_kernel(const __half* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                      __half* __restrict__ y, int cols, float eps) {
  extern __shared__ float row[];
  __shared__ float red[32];
  detail::wait_prior_kernels();
  detail::allow_next_kernel();
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  const bool pairs = (cols % 2 == 0);  // every row then starts 4-byte aligned (cudaMalloc'd buffers)

  float sum = 0.0f;
  if (pairs) {
    for (int c = threadIdx.x * 2; c < cols; c += kThreads * 2) {
      const float2 v = __half22float2(*reinterpret_cast<const __half2*>(x + base + c));
      row[c] = v.x;
      row[c + 1] = v.y;
      sum += v.x + v.y;
    }
  } else {
    for (int c = threadIdx.x; c < cols; c += kThreads) {
      const float v = __half2float(x[base + c]);
      row[c] = v;
      sum += v;
    }
  }
  const float mean = block_sum(sum, red) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    const float d = row[c] - mean;
    sq += d * d;
  }
  const float var = block_sum(sq, red) / static_cast<float>(cols);
  const float inv = rsqrtf(var + eps);
  if (pairs) {
    for (int c = threadIdx.x * 2; c < cols; c += kThreads * 2) {
      const float a = (row[c] - mean) * inv * gamma[c] + beta[c];
      const float b = (row[c + 1] - mean) * inv * gamma[c + 1] + beta[c + 1];
      *reinterpret_cast<__half2*>(y + base + c) = __floats2half2_rn(a, b);
    }
  } else {
    for (int c = threadIdx.x; c < cols; c += kThreads) {
      y[base + c] = __float2half_rn((row[c] - mean) * inv * gamma[c] + beta[c]);
    }
  }
}

// Rows of at most 2048 columns (every decoder norm of a decode step): one warp per row, the row in registers,
// so no shared memory and no block barrier; gamma and beta are constants and are read before waiting for the
// kernel that writes x, so only the row's own load is on the critical path. V: 16-byte vectors (8 columns)
// per lane, ceil(cols / 256).
constexpr int kWarpRowsPerBlock = 4;
constexpr int kWarpMaxVecs = 8;

// A row's mean and 1 / sqrt(variance + eps) from the warp's V vectors of 8 columns (lane + 32 i < vecs hold columns).
template <int V>
__device__ __forceinline__ float2 warp_row_moments(const float (&v8)[V][8], int lane, int vecs, int cols, float eps) {
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    if (lane + 32 * i >= vecs) continue;
#pragma unroll
    for (int e = 0; e < 8; ++e) sum += v8[i][e];
  }
  const float mean = detail::warp_sum(sum) / static_cast<float>(cols);
  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    if (lane + 32 * i >= vecs) continue;
#pragma unroll
    for (int e = 0; e < 8; ++e) sq += (v8[i][e] - mean) * (v8[i][e] - mean);
  }
  return make_float2(mean, rsqrtf(detail::warp_sum(sq) / static_cast<float>(cols) + eps));
}

template <int V>
__global__ void __launch_bounds__(kWarpRowsPerBlock * 32)
    layer_norm_warp_kernel(const __half* __restrict__ x, const float* __restrict__ gamma,
                           const float* __restrict__ beta, __half* __restrict__ y, int rows, int cols, float eps) {
  const int lane = threadIdx.x % 32;
  const int row = static_cast<int>(blockIdx.x) * kWarpRowsPerBlock + static_cast<int>(threadIdx.x) / 32;
  const int vecs = cols / 8;
  float g[V][8], b[V][8];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int v = lane + 32 * i;
    if (v >= vecs) continue;
    const float4* gv = reinterpret_cast<const float4*>(gamma + 8 * v);
    const float4* bv = reinterpret_cast<const float4*>(beta + 8 * v);
    const float4 g0 = gv[0], g1 = gv[1], b0 = bv[0], b1 = bv[1];
    g[i][0] = g0.x, g[i][1] = g0.y, g[i][2] = g0.z, g[i][3] = g0.w;
    g[i][4] = g1.x, g[i][5] = g1.y, g[i][6] = g1.z, g[i][7] = g1.w;
    b[i][0] = b0.x, b[i][1] = b0.y, b[i][2] = b0.z, b[i][3] = b0.w;
    b[i][4] = b1.x, b[i][5] = b1.y, b[i][6] = b1.z, b[i][7] = b1.w;
  }
  detail::wait_prior_kernels();
  detail::allow_next_kernel();
  if (row >= rows) return;
  const __half* xr = x + static_cast<int64_t>(row) * cols;
  float v8[V][8];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int v = lane + 32 * i;
    if (v < vecs) detail::unpack8(*reinterpret_cast<const uint4*>(xr + 8 * v), v8[i]);
  }
  const float2 m = warp_row_moments(v8, lane, vecs, cols, eps);
  const float mean = m.x, inv = m.y;
  __half* yr = y + static_cast<int64_t>(row) * cols;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int v = lane + 32 * i;
    if (v >= vecs) continue;
    float o[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = (v8[i][e] - mean) * inv * g[i][e] + b[i][e];
    *reinterpret_cast<uint4*>(yr + 8 * v) = detail::pack8(o);
  }
}

// Many rows (an encoder's norms: 1500 rows a window, 48000 for 32 windows): a warp per row as above, but each warp
// walks rows grid-stride with γ and β in shared memory, loaded once per block, and the next row's load in flight
// while it normalises this one. The one-row-per-warp kernel spends a row's 2.5 KB of x on 10 KB of γ and β per warp
// and a whole block's life. 48000 × 1280 on an H200: 69.2 µs (3.55 TB/s) here, 83.0 µs (2.96 TB/s) a warp per row
// (docs/cuda.md, seventeenth session).
constexpr int kLoopWarps = 8;
constexpr int kLoopMinRowsPerSm = 4 * kLoopWarps;  // fewer rows: the one-row-per-warp kernel

template <int V>
__global__ void __launch_bounds__(kLoopWarps * 32)
    layer_norm_rows_kernel(const __half* __restrict__ x, const float* __restrict__ gamma,
                           const float* __restrict__ beta, __half* __restrict__ y, int rows, int cols, float eps) {
  __shared__ float4 s_g[kWarpMaxVecs * 32 * 2], s_b[kWarpMaxVecs * 32 * 2];
  const int vecs = cols / 8;
  for (int i = static_cast<int>(threadIdx.x); i < 2 * vecs; i += kLoopWarps * 32) {
    s_g[i] = reinterpret_cast<const float4*>(gamma)[i];
    s_b[i] = reinterpret_cast<const float4*>(beta)[i];
  }
  __syncthreads();
  detail::wait_prior_kernels();
  detail::allow_next_kernel();
  const int lane = threadIdx.x % 32;
  const int stride = static_cast<int>(gridDim.x) * kLoopWarps;
  auto fetch = [&](int row, uint4(&u)[V]) {
    if (row >= rows) return;
    const uint4* xr = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(row) * cols);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (lane + 32 * i < vecs) u[i] = xr[lane + 32 * i];
    }
  };
  int row = static_cast<int>(blockIdx.x) * kLoopWarps + static_cast<int>(threadIdx.x) / 32;
  uint4 cur[V], next[V];
  fetch(row, cur);
  for (; row < rows; row += stride) {
    fetch(row + stride, next);
    float v8[V][8];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (lane + 32 * i < vecs) unpack8(cur[i], v8[i]);
    }
    const float2 m = warp_row_moments(v8, lane, vecs, cols, eps);
    const float mean = m.x, inv = m.y;
    uint4* yr = reinterpret_cast<uint4*>(y + static_cast<int64_t>(row) * cols);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int v = lane + 32 * i;
      if (v >= vecs) continue;
      const float4 g0 = s_g[2 * v], g1 = s_g[2 * v + 1], b0 = s_b[2 * v], b1 = s_b[2 * v + 1];
      const float g[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
      float o[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = (v8[i][e] - mean) * inv * g[e] + b[e];
      yr[v] = detail::pack8(o);
    }
#pragma unroll
    for (int i = 0; i < V; ++i) cur[i] = next[i];
  }
}

template <int V>
Status launch_rows_norm(const __half* x, const float* gamma, const float* beta, __half* y, int64_t rows, int64_t cols,
                        float eps, cudaStream_t stream) {
  if (V < kWarpMaxVecs && cols > int64_t{V} * 256) {
    return launch_rows_norm<(V < kWarpMaxVecs ? V + 1 : V)>(x, gamma, beta, y, rows, cols, eps, stream);
  }
  static std::atomic<int> per_sm{0};  // resident blocks an SM (registers), once per process
  if (per_sm.load(std::memory_order_relaxed) == 0) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, layer_norm_rows_kernel<V>, kLoopWarps * 32, 0) !=
        cudaSuccess) {
      return Status::kCudaError;
    }
    per_sm.store(std::max(n, 1), std::memory_order_relaxed);
  }
  const int64_t resident = int64_t{per_sm.load(std::memory_order_relaxed)} * detail::device_limits().sms;
  const auto blocks = static_cast<unsigned>(std::min(resident, (rows + kLoopWarps - 1) / kLoopWarps));
  return detail::launch_chained(layer_norm_rows_kernel<V>, dim3(blocks), dim3(kLoopWarps * 32), 0, stream, 1u, x, gamma,
                                beta, y, static_cast<int>(rows), static_cast<int>(cols), eps);
}

template <int V>
Status launch_warp_norm(const __half* x, const float* gamma, const float* beta, __half* y, int64_t rows, int64_t cols,
                        float eps, cudaStream_t stream) {
  if (V < kWarpMaxVecs && cols > int64_t{V} * 256) {
    return launch_warp_norm<(V < kWarpMaxVecs ? V + 1 : V)>(x, gamma, beta, y, rows, cols, eps, stream);
  }
  const auto blocks = static_cast<unsigned>((rows + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock);
  return detail::launch_chained(layer_norm_warp_kernel<V>, dim3(blocks), dim3(kWarpRowsPerBlock * 32), 0, stream, 1u, x,
                                gamma, beta, y, static_cast<int>(rows), static_cast<int>(cols), eps);
}

bool aligned4(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 3u) == 0; }

Status check(const void* x, const void* gamma, const void* beta, const void* y, int64_t rows, int64_t cols) {
  if (rows < 0 || cols <= 0 || cols > kMaxCols || rows > INT32_MAX) return Status::kInvalidArgument;
  if (rows > 0 && (!x || !gamma || !beta || !y)) return Status::kInvalidArgument;
  return Status::kOk;
}

}  // namespace

Status layer_norm(const __half* x, const float* gamma, const float* beta, __half* y, int64_t rows, int64_t cols,
                  float eps, cudaStream_t stream) {
  if (Status s = check(x, gamma, beta, y, rows, cols); s != Status::kOk) return s;
  if (rows == 0) return Status::kOk;
  if (cols % 8 == 0 && cols <= int64_t{kWarpMaxVecs} * 256 && detail::aligned16(x) && detail::aligned16(y) &&
      detail::aligned16(gamma) && detail::aligned16(beta)) {
    if (rows >= int64_t{kLoopMinRowsPerSm} * detail::device_limits().sms) {
      return launch_rows_norm<1>(x, gamma, beta, y, rows, cols, eps, stream);
    }
    return launch_warp_norm<1>(x, gamma, beta, y, rows, cols, eps, stream);
  }
  // The half2 path needs 4-byte aligned rows; odd columns take the scalar path anyway.
  if (cols % 2 == 0 && (!aligned4(x) || !aligned4(y))) return Status::kInvalidArgument;
  const size_t smem = static_cast<size_t>(cols) * sizeof(float);
  return detail::launch_chained(layer_norm_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), smem, stream, 1u,
                                x, gamma, beta, y, static_cast<int>(cols), eps);
}

}  // namespace wisp::kernels::cuda
