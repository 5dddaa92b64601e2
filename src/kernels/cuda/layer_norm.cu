// Layer norm, one block per row: the row is read once into shared memory (fp32), then two block reductions
// give the mean and the variance of the centred values (no E[x²] − E[x]² cancellation), then one write.
#include "kernels/cuda/common.cuh"

namespace wisp::kernels::cuda {

using detail::block_sum;
using detail::launch_status;

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxCols = 12288;  // the row in fp32 fits the default 48 KiB of shared memory

template <bool kResidual>
__global__ void __launch_bounds__(kThreads)
    layer_norm_kernel(__half* __restrict__ x, const __half* __restrict__ r, const float* __restrict__ gamma,
                      const float* __restrict__ beta, __half* __restrict__ y, int cols, float eps) {
  extern __shared__ float row[];
  __shared__ float red[32];
  detail::wait_prior_kernels();
  detail::allow_next_kernel();
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  const bool pairs = (cols % 2 == 0);  // every row then starts 4-byte aligned (cudaMalloc'd buffers)

  float sum = 0.0f;
  if (pairs) {
    for (int c = threadIdx.x * 2; c < cols; c += kThreads * 2) {
      float2 v = __half22float2(*reinterpret_cast<const __half2*>(x + base + c));
      if constexpr (kResidual) {
        const float2 d = __half22float2(*reinterpret_cast<const __half2*>(r + base + c));
        const __half2 s = __floats2half2_rn(v.x + d.x, v.y + d.y);
        *reinterpret_cast<__half2*>(x + base + c) = s;
        v = __half22float2(s);
      }
      row[c] = v.x;
      row[c + 1] = v.y;
      sum += v.x + v.y;
    }
  } else {
    for (int c = threadIdx.x; c < cols; c += kThreads) {
      float v = __half2float(x[base + c]);
      if constexpr (kResidual) {
        const __half s = __float2half_rn(v + __half2float(r[base + c]));
        x[base + c] = s;
        v = __half2float(s);
      }
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
  // The half2 path needs 4-byte aligned rows; odd columns take the scalar path anyway.
  if (cols % 2 == 0 && (!aligned4(x) || !aligned4(y))) return Status::kInvalidArgument;
  const size_t smem = static_cast<size_t>(cols) * sizeof(float);
  return detail::launch_chained(layer_norm_kernel<false>, dim3(static_cast<unsigned>(rows)), dim3(kThreads), smem,
                                stream, 1u, const_cast<__half*>(x), nullptr, gamma, beta, y, static_cast<int>(cols),
                                eps);
}

Status add_layer_norm(__half* x, const __half* r, const float* gamma, const float* beta, __half* y, int64_t rows,
                      int64_t cols, float eps, cudaStream_t stream) {
  if (Status s = check(x, gamma, beta, y, rows, cols); s != Status::kOk) return s;
  if (rows == 0) return Status::kOk;
  if (!r || y == x || y == r) return Status::kInvalidArgument;
  if (cols % 2 == 0 && (!aligned4(x) || !aligned4(y) || !aligned4(r))) return Status::kInvalidArgument;
  const size_t smem = static_cast<size_t>(cols) * sizeof(float);
  return detail::launch_chained(layer_norm_kernel<true>, dim3(static_cast<unsigned>(rows)), dim3(kThreads), smem,
                                stream, 1u, x, r, gamma, beta, y, static_cast<int>(cols), eps);
}

}  // namespace wisp::kernels::cuda
