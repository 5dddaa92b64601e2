// Writing quantised KV caches (kv_quant.h) and the calibration maxima. The attention that reads them is in
// decoder_attention.cu.
//
// Quantisation: a group of 8 lanes owns one (row, K/V, head): each lane loads 16 bytes (8 halves) of the
// head's 64 values, the group reduces the absolute maximum with 3 shuffles when the scale is per token, and
// each lane stores its 8 codes (8 bytes, or 16 for kF16).
#include <cuda_fp8.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_codes.cuh"
#include "kernels/cuda/kv_quant.h"

namespace wisp::kernels::cuda {

using detail::aligned16;
using detail::launch_status;
using detail::unpack8;

namespace {

constexpr int kHeadDim = 64;
constexpr int kLanes = 8;  // lanes per (row, K/V, head)
constexpr int kThreads = 256;

using detail::kv_code_fp8;
using detail::kv_code_i8;
using detail::kv_inverse;

template <KvType T>
__device__ __forceinline__ void store8(char* dst, const float (&x)[8], float scale) {
  if constexpr (T == KvType::kF16) {
    *reinterpret_cast<uint4*>(dst) = detail::pack8(x);
  } else {
    const float inv = kv_inverse(scale);
    uint32_t w[2] = {0, 0};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      w[e / 4] |= (T == KvType::kFp8 ? kv_code_fp8(x[e], inv) : kv_code_i8(x[e], inv)) << (8 * (e % 4));
    }
    *reinterpret_cast<uint2*>(dst) = make_uint2(w[0], w[1]);
  }
}

struct QuantizeParams {
  const __half* src;
  int64_t lds, src_batch_stride;
  int rows;            // source rows per sequence
  int seq_rows;        // batch · rows
  const int32_t* row;  // append: cache row of each sequence (rows == 1); null: source row r → cache row r
  int64_t n_rows;      // cache rows, for the append's bounds check
  char* cache;         // elements of the type
  int64_t ldc, cache_batch_stride;
  float* scales;  // per head: [2·n_head]; per token: [batch, n_rows, scale_ld]
  int64_t scale_ld, scale_batch_stride;
  const int32_t* slot;  // [batch]: cache (and scales) of source sequence b; null: b
  int n_head;
};

constexpr int kRowsPerBlock = 4;  // source rows a block, their loads issued before any store
// A thread per 8 values of a K/V row; blocks of up to 512 threads launch at any register count up to 128 (the
// kernels take 64-68).
constexpr int kMaxQuantizeThreads = 512;
constexpr int64_t kMaxHeads = kMaxQuantizeThreads / (2 * kLanes);

// A block has a thread per 8 values of a row (16 · n_head threads) and takes kRowsPerBlock consecutive source
// rows s = b · rows + r: thread t holds unit t / 8 = kv · n_head + h, head dims [8 · (t % 8), +8). So the
// per-head scale and the column are fixed per thread, the sequence and row advance by one, and a thread has
// its rows' loads in flight at once. (One unit per thread of a flat grid, its indices from 64-bit divisions,
// read and wrote one layer's batch-32 cross K/V at ~2 TB/s.)
template <KvType T>
__global__ void kv_quantize_kernel(const QuantizeParams p) {
  detail::wait_prior_kernels();
  detail::allow_next_kernel();
  const int t = static_cast<int>(threadIdx.x), lane = t % kLanes, unit = t / kLanes;
  const int64_t col = static_cast<int64_t>(unit) * kHeadDim + lane * 8;
  const unsigned group_mask = 0xFFu << (t % detail::kWarp / kLanes * kLanes);
  const int s0 = static_cast<int>(blockIdx.x) * kRowsPerBlock;
  float scale = 1.0f;
  if constexpr (T == KvType::kI8Static || T == KvType::kFp8) scale = p.scales[unit];
  int b = s0 / p.rows, r = s0 % p.rows;
  int bs[kRowsPerBlock], rs[kRowsPerBlock];
  float x[kRowsPerBlock][8];
#pragma unroll
  for (int i = 0; i < kRowsPerBlock; ++i) {
    bs[i] = b, rs[i] = r;
    if (s0 + i < p.seq_rows) {
      unpack8(*reinterpret_cast<const uint4*>(p.src + b * p.src_batch_stride + r * p.lds + col), x[i]);
    }
    if (++r == p.rows) r = 0, ++b;
  }
#pragma unroll
  for (int i = 0; i < kRowsPerBlock; ++i) {
    if (s0 + i >= p.seq_rows) break;
    const int64_t dst_row = p.row ? p.row[bs[i]] : rs[i];
    if (dst_row < 0 || dst_row >= p.n_rows) continue;   // the same for the whole group
    const int64_t cb = p.slot ? p.slot[bs[i]] : bs[i];  // destination cache
    if constexpr (T == KvType::kI8Dynamic) {
      float amax = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(x[i][e]));
#pragma unroll
      for (int o = 1; o < kLanes; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(group_mask, amax, o));
      scale = amax / 127.0f;
      if (lane == 0) p.scales[cb * p.scale_batch_stride + dst_row * p.scale_ld + unit] = scale;
    }
    store8<T>(p.cache + (cb * p.cache_batch_stride + dst_row * p.ldc + col) * kv_element_bytes(T), x[i], scale);
  }
}

// One block per (K/V head, row range, sequence): groups of 8 lanes read whole 128-byte head rows.
__global__ void __launch_bounds__(kThreads) kv_absmax_kernel(const __half* src, int64_t ld, int64_t batch_stride,
                                                             const int32_t* len, int64_t rows, float* amax) {
  __shared__ float red[detail::kWarp];
  const int64_t b = blockIdx.z, end = len ? min(max(int64_t(len[b]), int64_t(0)), rows) : rows;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kHeadDim + threadIdx.x % kLanes * 8;
  constexpr int kRowsPerPass = kThreads / kLanes;
  float m = 0.0f;
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * kRowsPerPass + threadIdx.x / kLanes; r < end;
       r += static_cast<int64_t>(gridDim.y) * kRowsPerPass) {
    float x[8];
    unpack8(*reinterpret_cast<const uint4*>(src + b * batch_stride + r * ld + col), x);
#pragma unroll
    for (int e = 0; e < 8; ++e) m = fmaxf(m, fabsf(x[e]));
  }
  m = detail::block_max(m, red);
  // Non-negative floats order like their bit patterns as integers.
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(amax + blockIdx.x), __float_as_int(m));
}

// Checks shared by kv_quantize and kv_append_quantized.
Status check_cache(const KvView& c, int64_t n_head, int64_t head_dim) {
  if (head_dim != kHeadDim) return Status::kNotSupported;
  if (!c.data || c.ld < 2 * n_head * head_dim || c.ld % 8 != 0 || c.batch_stride % 8 != 0 || c.batch_stride < 0) {
    return Status::kInvalidArgument;
  }
  if (reinterpret_cast<uintptr_t>(c.data) % static_cast<uintptr_t>(8 * kv_element_bytes(c.type)) != 0) {
    return Status::kInvalidArgument;
  }
  if (c.type != KvType::kF16 && !c.scales) return Status::kInvalidArgument;
  if (c.type == KvType::kI8Dynamic && (c.scale_ld < 2 * n_head || c.scale_batch_stride < 0)) {
    return Status::kInvalidArgument;
  }
  return Status::kOk;
}

Status launch_quantize(const KvView& c, QuantizeParams p, cudaStream_t stream) {
  p.cache = static_cast<char*>(c.data);
  p.ldc = c.ld;
  p.cache_batch_stride = c.batch_stride;
  p.scales = c.scales;
  p.scale_ld = c.scale_ld;
  p.scale_batch_stride = c.scale_batch_stride;
  p.slot = c.slot;
  const dim3 grid(static_cast<unsigned>((p.seq_rows + kRowsPerBlock - 1) / kRowsPerBlock));
  const dim3 block(static_cast<unsigned>(2 * p.n_head * kLanes));
  switch (c.type) {
    case KvType::kF16:
      return detail::launch_chained(kv_quantize_kernel<KvType::kF16>, grid, block, 0, stream, 1u, p);
    case KvType::kI8Static:
      return detail::launch_chained(kv_quantize_kernel<KvType::kI8Static>, grid, block, 0, stream, 1u, p);
    case KvType::kI8Dynamic:
      return detail::launch_chained(kv_quantize_kernel<KvType::kI8Dynamic>, grid, block, 0, stream, 1u, p);
    case KvType::kFp8:
      return detail::launch_chained(kv_quantize_kernel<KvType::kFp8>, grid, block, 0, stream, 1u, p);
  }
  return Status::kInvalidArgument;
}

}  // namespace

const char* kv_type_name(KvType type) {
  switch (type) {
    case KvType::kF16:
      return "f16";
    case KvType::kI8Static:
      return "int8 static";
    case KvType::kI8Dynamic:
      return "int8 dynamic";
    case KvType::kFp8:
      return "fp8 e4m3";
  }
  return "?";
}

Status kv_quantize(const __half* src, int64_t lds, int64_t src_batch_stride, const KvView& cache, int64_t rows,
                   int64_t batch, int64_t n_head, int64_t head_dim, cudaStream_t stream) {
  if (batch < 0 || rows < 0 || n_head <= 0 || n_head > INT32_MAX) return Status::kInvalidArgument;
  if (batch == 0 || rows == 0) return Status::kOk;
  if (rows > (INT32_MAX - kRowsPerBlock) / batch) return Status::kInvalidArgument;  // 32-bit row indices
  if (n_head > kMaxHeads) return Status::kNotSupported;
  if (const Status s = check_cache(cache, n_head, head_dim); s != Status::kOk) return s;
  if (!src || !aligned16(src) || lds < 2 * n_head * head_dim || lds % 8 != 0 || src_batch_stride % 8 != 0 ||
      src_batch_stride < 0) {
    return Status::kInvalidArgument;
  }
  QuantizeParams p{};
  p.src = src;
  p.lds = lds;
  p.src_batch_stride = src_batch_stride;
  p.rows = static_cast<int>(rows);
  p.seq_rows = static_cast<int>(batch * rows);
  p.n_rows = rows;
  p.n_head = static_cast<int>(n_head);
  return launch_quantize(cache, p, stream);
}

Status kv_append_quantized(const __half* src, int64_t lds, const KvView& cache, const int32_t* row, int64_t n_rows,
                           int64_t batch, int64_t n_head, int64_t head_dim, cudaStream_t stream) {
  if (batch < 0 || n_rows <= 0 || n_head <= 0 || n_head > INT32_MAX) return Status::kInvalidArgument;
  if (batch == 0) return Status::kOk;
  if (batch > INT32_MAX - kRowsPerBlock) return Status::kInvalidArgument;
  if (n_head > kMaxHeads) return Status::kNotSupported;
  if (const Status s = check_cache(cache, n_head, head_dim); s != Status::kOk) return s;
  if (!src || !row || !aligned16(src) || lds < 2 * n_head * head_dim || lds % 8 != 0) return Status::kInvalidArgument;
  QuantizeParams p{};
  p.src = src;
  p.lds = 0;
  p.src_batch_stride = lds;
  p.rows = 1;
  p.seq_rows = static_cast<int>(batch);
  p.row = row;
  p.n_rows = n_rows;
  p.n_head = static_cast<int>(n_head);
  return launch_quantize(cache, p, stream);
}

Status kv_absmax(const __half* src, int64_t ld, int64_t src_batch_stride, const int32_t* len, int64_t rows,
                 int64_t batch, int64_t n_head, int64_t head_dim, float* amax, cudaStream_t stream) {
  if (batch < 0 || rows < 0 || n_head <= 0 || batch > 65535 || 2 * n_head > INT32_MAX) return Status::kInvalidArgument;
  if (batch == 0 || rows == 0) return Status::kOk;
  if (head_dim != kHeadDim) return Status::kNotSupported;
  if (!src || !amax || !aligned16(src) || ld < 2 * n_head * head_dim || ld % 8 != 0 || src_batch_stride % 8 != 0 ||
      src_batch_stride < 0) {
    return Status::kInvalidArgument;
  }
  constexpr int64_t kAbsmaxRowsPerBlock = 8 * (kThreads / kLanes);  // 8 rows per group
  const dim3 grid(
      static_cast<unsigned>(2 * n_head),
      static_cast<unsigned>(std::min<int64_t>((rows + kAbsmaxRowsPerBlock - 1) / kAbsmaxRowsPerBlock, 65535)),
      static_cast<unsigned>(batch));
  kv_absmax_kernel<<<grid, kThreads, 0, stream>>>(src, ld, src_batch_stride, len, rows, amax);
  return launch_status();
}

}  // namespace wisp::kernels::cuda
