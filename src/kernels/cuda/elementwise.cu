// Conversions, GELU, residual adds, embeddings and im2col: memory-bound one-pass kernels. The contiguous
// ones move 16 bytes per thread when the pointers allow it (a scalar kernel handles the rest).
#include "kernels/cuda/common.cuh"

namespace wisp::kernels::cuda {

using detail::aligned16;
using detail::gelu_erf;
using detail::grid_for;
using detail::launch_status;
using detail::pack8;
using detail::unpack8;

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t global_id() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t global_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// ---- conversions --------------------------------------------------------------------------------------

__global__ void f16_to_f32_kernel(const __half* __restrict__ x, float* __restrict__ y, int64_t n, int64_t n_vec) {
  for (int64_t i = global_id(); i < n_vec; i += global_stride()) {
    float f[8];
    unpack8(reinterpret_cast<const uint4*>(x)[i], f);
    reinterpret_cast<float4*>(y)[2 * i] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4*>(y)[2 * i + 1] = make_float4(f[4], f[5], f[6], f[7]);
  }
  for (int64_t i = n_vec * 8 + global_id(); i < n; i += global_stride()) y[i] = __half2float(x[i]);
}

__global__ void f32_to_f16_kernel(const float* __restrict__ x, __half* __restrict__ y, int64_t n, int64_t n_vec) {
  for (int64_t i = global_id(); i < n_vec; i += global_stride()) {
    const float4 a = reinterpret_cast<const float4*>(x)[2 * i];
    const float4 b = reinterpret_cast<const float4*>(x)[2 * i + 1];
    const float f[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    reinterpret_cast<uint4*>(y)[i] = pack8(f);
  }
  for (int64_t i = n_vec * 8 + global_id(); i < n; i += global_stride()) y[i] = __float2half_rn(x[i]);
}

// ---- GELU and bias --------------------------------------------------------------------------------------

__global__ void gelu_kernel(__half* __restrict__ x, int64_t n, int64_t n_vec) {
  for (int64_t i = global_id(); i < n_vec; i += global_stride()) {
    float f[8];
    unpack8(reinterpret_cast<const uint4*>(x)[i], f);
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = gelu_erf(f[j]);
    reinterpret_cast<uint4*>(x)[i] = pack8(f);
  }
  for (int64_t i = n_vec * 8 + global_id(); i < n; i += global_stride()) {
    x[i] = __float2half_rn(gelu_erf(__half2float(x[i])));
  }
}

// Vector path: cols, ldy multiples of 8 and aligned pointers; i runs over rows · cols/8.
__global__ void bias_gelu_vec_kernel(__half* __restrict__ y, const __half* __restrict__ bias, int64_t rows,
                                     int64_t cols8, int64_t ldy8, bool apply_gelu) {
  const int64_t total = rows * cols8;
  for (int64_t i = global_id(); i < total; i += global_stride()) {
    const int64_t r = i / cols8, c = i - r * cols8;
    uint4* p = reinterpret_cast<uint4*>(y) + r * ldy8 + c;
    float f[8];
    unpack8(*p, f);
    if (bias) {
      float bf[8];
      unpack8(reinterpret_cast<const uint4*>(bias)[c], bf);
#pragma unroll
      for (int j = 0; j < 8; ++j) f[j] += bf[j];
    }
    if (apply_gelu) {
#pragma unroll
      for (int j = 0; j < 8; ++j) f[j] = gelu_erf(f[j]);
    }
    *p = pack8(f);
  }
}

__global__ void bias_gelu_kernel(__half* __restrict__ y, const __half* __restrict__ bias, int64_t rows, int64_t cols,
                                 int64_t ldy, bool apply_gelu) {
  const int64_t total = rows * cols;
  for (int64_t i = global_id(); i < total; i += global_stride()) {
    const int64_t r = i / cols, c = i - r * cols;
    float f = __half2float(y[r * ldy + c]);
    if (bias) f += __half2float(bias[c]);
    if (apply_gelu) f = gelu_erf(f);
    y[r * ldy + c] = __float2half_rn(f);
  }
}

// ---- adds -----------------------------------------------------------------------------------------------

__global__ void add_kernel(const __half* a, const __half* b, __half* y, int64_t n, int64_t n_vec) {
  for (int64_t i = global_id(); i < n_vec; i += global_stride()) {
    float fa[8], fb[8];
    unpack8(reinterpret_cast<const uint4*>(a)[i], fa);
    unpack8(reinterpret_cast<const uint4*>(b)[i], fb);
#pragma unroll
    for (int j = 0; j < 8; ++j) fa[j] += fb[j];
    reinterpret_cast<uint4*>(y)[i] = pack8(fa);
  }
  for (int64_t i = n_vec * 8 + global_id(); i < n; i += global_stride()) {
    y[i] = __float2half_rn(__half2float(a[i]) + __half2float(b[i]));
  }
}

// y[i] += block[i % block_n]; vectorised when block_n is a multiple of 8.
__global__ void add_rows_kernel(__half* __restrict__ y, const __half* __restrict__ block, int64_t n, int64_t block_n,
                                bool vec) {
  if (vec) {
    const int64_t n8 = n / 8, block8 = block_n / 8;
    for (int64_t i = global_id(); i < n8; i += global_stride()) {
      float fy[8], fb[8];
      unpack8(reinterpret_cast<const uint4*>(y)[i], fy);
      unpack8(reinterpret_cast<const uint4*>(block)[i % block8], fb);
#pragma unroll
      for (int j = 0; j < 8; ++j) fy[j] += fb[j];
      reinterpret_cast<uint4*>(y)[i] = pack8(fy);
    }
    return;
  }
  for (int64_t i = global_id(); i < n; i += global_stride()) {
    y[i] = __float2half_rn(__half2float(y[i]) + __half2float(block[i % block_n]));
  }
}

// ---- embeddings -----------------------------------------------------------------------------------------

// One block per output row.
__global__ void embed_kernel(const int32_t* __restrict__ tokens, const int32_t* __restrict__ positions,
                             const __half* __restrict__ emb, const __half* __restrict__ pos, __half* __restrict__ out,
                             int64_t d, int64_t n_vocab, int64_t n_ctx, bool vec) {
  detail::wait_prior_kernels();
  detail::allow_next_kernel();
  const int64_t row = blockIdx.x;
  const int32_t tok = tokens[row], p = positions[row];
  const bool valid = tok >= 0 && tok < n_vocab && p >= 0 && p < n_ctx;
  __half* o = out + row * d;
  const __half* e = emb + (valid ? tok : 0) * d;
  const __half* q = pos + (valid ? p : 0) * d;
  if (vec) {
    for (int64_t c = threadIdx.x; c < d / 8; c += blockDim.x) {
      float fe[8], fp[8];
      if (valid) {
        unpack8(reinterpret_cast<const uint4*>(e)[c], fe);
        unpack8(reinterpret_cast<const uint4*>(q)[c], fp);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) fe[j] = valid ? fe[j] + fp[j] : 0.0f;
      reinterpret_cast<uint4*>(o)[c] = pack8(fe);
    }
    return;
  }
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    o[c] = __float2half_rn(valid ? __half2float(e[c]) + __half2float(q[c]) : 0.0f);
  }
}

// ---- im2col ---------------------------------------------------------------------------------------------

// Index is int32_t when the whole output fits, which turns the divisions into cheap 32-bit ones.
template <class Index>
__global__ void im2col_k3_kernel(const __half* __restrict__ x, __half* __restrict__ col, Index batch, Index t_in,
                                 Index c_in, Index t_out, int stride) {
  const Index width = c_in * 3, total = batch * t_out * width;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index bt = i / width, rem = i - bt * width;
    const Index b = bt / t_out, t = bt - b * t_out;
    const Index c = rem / 3, j = rem - c * 3;
    const Index src = t * stride + j - 1;
    col[i] = (src >= 0 && src < t_in) ? x[(static_cast<int64_t>(b) * t_in + src) * c_in + c] : __float2half_rn(0.0f);
  }
}

template <class Index>
__global__ void im2col_k3_mel_kernel(const float* __restrict__ mel, __half* __restrict__ col, Index batch, Index t_in,
                                     Index c_in, Index t_out, int stride) {
  const Index width = c_in * 3, total = batch * t_out * width;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index bt = i / width, rem = i - bt * width;
    const Index b = bt / t_out, t = bt - b * t_out;
    const Index c = rem / 3, j = rem - c * 3;
    const Index src = t * stride + j - 1;
    col[i] = __float2half_rn((src >= 0 && src < t_in) ? mel[(static_cast<int64_t>(b) * c_in + c) * t_in + src] : 0.0f);
  }
}

// Both im2col inputs fit 32-bit indices when neither the output nor the input reaches 2^31 elements.
bool fits_int32(int64_t batch, int64_t t_in, int64_t c_in, int64_t t_out) {
  const int64_t limit = int64_t{1} << 30;  // leaves room for i + grid stride (≤ 65535 · 16 · 256 < 2^28)
  return batch * t_out * c_in * 3 < limit && batch * t_in * c_in < limit && t_out * 2 + 3 < limit;
}

}  // namespace

Status f16_to_f32(const __half* x, float* y, int64_t n, cudaStream_t stream) {
  if (n < 0 || (n > 0 && (!x || !y))) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  const int64_t n_vec = aligned16(x) && aligned16(y) ? n / 8 : 0;
  f16_to_f32_kernel<<<grid_for(n_vec > 0 ? n_vec : n, kThreads), kThreads, 0, stream>>>(x, y, n, n_vec);
  return launch_status();
}

Status f32_to_f16(const float* x, __half* y, int64_t n, cudaStream_t stream) {
  if (n < 0 || (n > 0 && (!x || !y))) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  const int64_t n_vec = aligned16(x) && aligned16(y) ? n / 8 : 0;
  f32_to_f16_kernel<<<grid_for(n_vec > 0 ? n_vec : n, kThreads), kThreads, 0, stream>>>(x, y, n, n_vec);
  return launch_status();
}

Status gelu(__half* x, int64_t n, cudaStream_t stream) {
  if (n < 0 || (n > 0 && !x)) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  const int64_t n_vec = aligned16(x) ? n / 8 : 0;
  gelu_kernel<<<grid_for(n_vec > 0 ? n_vec : n, kThreads), kThreads, 0, stream>>>(x, n, n_vec);
  return launch_status();
}

Status add_bias_gelu(__half* y, const __half* bias, int64_t rows, int64_t cols, int64_t ldy, bool apply_gelu,
                     cudaStream_t stream) {
  if (rows < 0 || cols < 0 || ldy < cols || (rows > 0 && cols > 0 && !y)) return Status::kInvalidArgument;
  if (rows == 0 || cols == 0) return Status::kOk;
  const bool vec = cols % 8 == 0 && ldy % 8 == 0 && aligned16(y) && (!bias || aligned16(bias));
  if (vec) {
    bias_gelu_vec_kernel<<<grid_for(rows * cols / 8, kThreads), kThreads, 0, stream>>>(y, bias, rows, cols / 8, ldy / 8,
                                                                                       apply_gelu);
  } else {
    bias_gelu_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(y, bias, rows, cols, ldy, apply_gelu);
  }
  return launch_status();
}

Status add(const __half* a, const __half* b, __half* y, int64_t n, cudaStream_t stream) {
  if (n < 0 || (n > 0 && (!a || !b || !y))) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  const int64_t n_vec = aligned16(a) && aligned16(b) && aligned16(y) ? n / 8 : 0;
  add_kernel<<<grid_for(n_vec > 0 ? n_vec : n, kThreads), kThreads, 0, stream>>>(a, b, y, n, n_vec);
  return launch_status();
}

Status add_rows(__half* y, const __half* block, int64_t batch, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (batch < 0 || rows < 0 || cols < 0) return Status::kInvalidArgument;
  const int64_t block_n = rows * cols, n = batch * block_n;
  if (n == 0) return Status::kOk;
  if (!y || !block) return Status::kInvalidArgument;
  const bool vec = block_n % 8 == 0 && aligned16(y) && aligned16(block);
  add_rows_kernel<<<grid_for(vec ? n / 8 : n, kThreads), kThreads, 0, stream>>>(y, block, n, block_n, vec);
  return launch_status();
}

Status embed_tokens(const int32_t* tokens, const int32_t* positions, const __half* token_embedding,
                    const __half* positional, __half* out, int64_t n, int64_t d, int64_t n_vocab, int64_t n_ctx,
                    cudaStream_t stream) {
  if (n < 0 || d <= 0 || n_vocab <= 0 || n_ctx <= 0 || n > INT32_MAX) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!tokens || !positions || !token_embedding || !positional || !out) return Status::kInvalidArgument;
  const bool vec = d % 8 == 0 && aligned16(token_embedding) && aligned16(positional) && aligned16(out);
  return detail::launch_chained(embed_kernel, dim3(static_cast<unsigned>(n)), dim3(128), 0, stream, 1u, tokens,
                                positions, token_embedding, positional, out, d, n_vocab, n_ctx, vec);
}

Status im2col_k3(const __half* x, __half* col, int64_t batch, int64_t t_in, int64_t c_in, int64_t t_out, int stride,
                 cudaStream_t stream) {
  if (batch < 0 || t_in <= 0 || c_in <= 0 || t_out < 0 || stride <= 0) return Status::kInvalidArgument;
  const int64_t total = batch * t_out * c_in * 3;
  if (total == 0) return Status::kOk;
  if (!x || !col) return Status::kInvalidArgument;
  if (fits_int32(batch, t_in, c_in, t_out)) {
    im2col_k3_kernel<int32_t><<<grid_for(total, kThreads), kThreads, 0, stream>>>(
        x, col, static_cast<int32_t>(batch), static_cast<int32_t>(t_in), static_cast<int32_t>(c_in),
        static_cast<int32_t>(t_out), stride);
  } else {
    im2col_k3_kernel<int64_t>
        <<<grid_for(total, kThreads), kThreads, 0, stream>>>(x, col, batch, t_in, c_in, t_out, stride);
  }
  return launch_status();
}

Status im2col_k3_mel(const float* mel, __half* col, int64_t batch, int64_t t_in, int64_t c_in, int64_t t_out,
                     int stride, cudaStream_t stream) {
  if (batch < 0 || t_in <= 0 || c_in <= 0 || t_out < 0 || stride <= 0) return Status::kInvalidArgument;
  const int64_t total = batch * t_out * c_in * 3;
  if (total == 0) return Status::kOk;
  if (!mel || !col) return Status::kInvalidArgument;
  if (fits_int32(batch, t_in, c_in, t_out)) {
    im2col_k3_mel_kernel<int32_t><<<grid_for(total, kThreads), kThreads, 0, stream>>>(
        mel, col, static_cast<int32_t>(batch), static_cast<int32_t>(t_in), static_cast<int32_t>(c_in),
        static_cast<int32_t>(t_out), stride);
  } else {
    im2col_k3_mel_kernel<int64_t>
        <<<grid_for(total, kThreads), kThreads, 0, stream>>>(mel, col, batch, t_in, c_in, t_out, stride);
  }
  return launch_status();
}

}  // namespace wisp::kernels::cuda
