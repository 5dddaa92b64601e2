// Decoder-step bookkeeping on the device, so that a whole decode step (and its cache append) can be
// captured once in a CUDA graph and replayed: the positions live in device memory instead of host arguments.
#include "kernels/cuda/common.cuh"

namespace wisp::kernels::cuda {

using detail::aligned16;
using detail::launch_status;

namespace {

// One block per sequence; 16-byte copies when everything is aligned.
__global__ void kv_append_kernel(const __half* __restrict__ src, int64_t lds, __half* __restrict__ cache,
                                 int64_t cache_batch_stride, int64_t ldc, const int32_t* __restrict__ row,
                                 int64_t n_rows, int64_t cols, bool vec) {
  const int64_t b = blockIdx.x;
  const int32_t r = row[b];
  if (r < 0 || r >= n_rows) return;  // the host validates lengths; never write out of bounds
  const __half* s = src + b * lds;
  __half* d = cache + b * cache_batch_stride + int64_t(r) * ldc;
  if (vec) {
    for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
      reinterpret_cast<uint4*>(d)[c] = reinterpret_cast<const uint4*>(s)[c];
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) d[c] = s[c];
  }
}

__global__ void add_scalar_kernel(int32_t* a, int32_t* b, int64_t n, int32_t v) {
  detail::wait_prior_kernels();
  detail::allow_next_kernel();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    a[i] += v;
    if (b) b[i] += v;
  }
}

}  // namespace

Status kv_append(const __half* src, int64_t lds, __half* cache, int64_t cache_batch_stride, int64_t ldc,
                 const int32_t* row, int64_t n_rows, int64_t cols, int64_t batch, cudaStream_t stream) {
  if (batch < 0 || cols < 0 || lds < cols || ldc < cols || n_rows <= 0 || batch > INT32_MAX) {
    return Status::kInvalidArgument;
  }
  if (batch == 0 || cols == 0) return Status::kOk;
  if (!src || !cache || !row) return Status::kInvalidArgument;
  const bool vec = cols % 8 == 0 && lds % 8 == 0 && ldc % 8 == 0 && cache_batch_stride % 8 == 0 && aligned16(src) &&
                   aligned16(cache);
  kv_append_kernel<<<static_cast<unsigned>(batch), 128, 0, stream>>>(src, lds, cache, cache_batch_stride, ldc, row,
                                                                     n_rows, cols, vec);
  return launch_status();
}

Status add_scalar_i32(int32_t* a, int32_t* b, int64_t n, int32_t value, cudaStream_t stream) {
  if (n < 0 || n > INT32_MAX) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!a) return Status::kInvalidArgument;
  return detail::launch_chained(add_scalar_kernel, dim3(detail::grid_for(n, 256)), dim3(256), 0, stream, 1u, a, b, n,
                                value);
}

}  // namespace wisp::kernels::cuda
