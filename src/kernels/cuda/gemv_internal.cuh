// What the GEMV kernels of gemv.cu and gemv_sm90a.cu share (not part of the kernels' interface): the
// parameter block, the K/V-append epilogue, the asynchronous-copy and cluster helpers, the device queries.
#pragma once

#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/kv_codes.cuh"

namespace wisp::kernels::cuda::gemv_detail {

// One gemv() call as every kernel reads it: the operands (shapes as in gemv.h), the epilogue, and the split the
// host chose for the kernel it launches.
struct GemvParams {
  const __half* x;  // [m, k]
  const void* w;    // WeightView::data
  const float* scales;
  const __half* bias;
  const __half* residual;  // may alias y
  __half* y;
  float* y32;
  // The folded row norm (RowNorm; the kernels' kNorm), or unused.
  const float* ln_gamma;    // [k]
  const float* ln_w_gamma;  // [n]
  const float* ln_w_beta;   // [n]
  float ln_eps;
  int m, n, k;
  int group_shift;  // kI4: log2(group / 64)
  bool gelu;
  // Tensor-core kernels.
  int row_tiles;        // 16-row tiles per block (1, 2 or 4); the other warps split k
  int chunks_per_rank;  // chunks of k per block of a cluster (the sm_90a kernel: 64-column atoms)
  // CUDA-core kernel.
  int vecs;         // 16-byte vectors per weight row
  int lanes;        // L: threads per team
  int tail_rounds;  // rounds after the first that are copied into shared memory before the wait
  // The fused K/V append (KvAppend), or kv == null.
  char* kv;
  KvType kv_type;
  int64_t kv_ld, kv_batch_stride;
  const float* kv_scales;  // static: [2·n_head]
  const int32_t* kv_row;   // [m]
  const int32_t* kv_slot;  // [m] or null
  int kv_rows, kv_col0, kv_width;
};

// Stores output (r, j), rounded to fp16 as h, into the K/V cache when j is one of its columns (KvAppend).
__device__ __forceinline__ void append_kv(const GemvParams& p, int r, int j, __half h) {
  const int c = j - p.kv_col0;
  if (!p.kv || c < 0 || c >= p.kv_width) return;
  const int row = p.kv_row[r];
  if (row < 0 || row >= p.kv_rows) return;
  const int64_t seq = p.kv_slot ? p.kv_slot[r] : r;
  const int64_t at = seq * p.kv_batch_stride + static_cast<int64_t>(row) * p.kv_ld + c;
  if (p.kv_type == KvType::kF16) {
    reinterpret_cast<__half*>(p.kv)[at] = h;
    return;
  }
  const float inv = detail::kv_inverse(p.kv_scales[c / 64]);  // the head's scale: K heads, then V heads
  const float x = __half2float(h);
  p.kv[at] = static_cast<char>(p.kv_type == KvType::kFp8 ? detail::kv_code_fp8(x, inv) : detail::kv_code_i8(x, inv));
}

// The epilogue of output (r, j) at o = r·n + j from its fp32 value v: stored as fp32 (the logits), or with the
// bias (already read, 0 without), the GELU, the residual, one rounding to fp16 and the K/V append.
template <bool kF32Out>
__device__ __forceinline__ void store_output(const GemvParams& p, int r, int j, int64_t o, float v, float bias) {
  if constexpr (kF32Out) {
    p.y32[o] = v;
  } else {
    v += bias;
    if (p.gelu) v = detail::gelu_erf(v);
    if (p.residual) v += __half2float(p.residual[o]);
    const __half y = __float2half_rn(v);
    p.y[o] = y;
    append_kv(p, r, j, y);
  }
}

// 16 bytes global → shared memory without registers (cp.async; L2 only).
__device__ __forceinline__ void copy16_async(void* smem, const void* gmem) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}

using detail::commit_async;
using detail::copy_async_zfill;
using detail::wait_async;

__device__ __forceinline__ uint32_t h2_sub(uint32_t a, uint32_t b) {
  const __half2 r = __hsub2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// 4 int8 → 2 half2 (columns (0, 1), (2, 3)), exact: with the sign bit flipped a byte is q + 128, and
// 0x64 above it makes the half 1024 + q + 128.
__device__ __forceinline__ void i8_to_h2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  constexpr uint32_t k1152 = 0x64806480u;
  const uint32_t u = w ^ 0x80808080u;
  lo = h2_sub(__byte_perm(u, 0x64646464u, 0x4140), k1152);
  hi = h2_sub(__byte_perm(u, 0x64646464u, 0x4342), k1152);
}

// The thread-block cluster a GEMV block belongs to (a single block below sm_90 or when launched without one),
// and the same shared array in another block of it (distributed shared memory).
struct ClusterRanks {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();  // before ranks and rank
  int ranks = 1, rank = 0;
  __device__ ClusterRanks()
      : ranks(static_cast<int>(cluster.num_blocks())), rank(static_cast<int>(cluster.block_rank())) {}
#else
  int ranks = 1, rank = 0;
  __device__ ClusterRanks() {}
#endif
  // Block r's copy of one of the kernel's shared arrays; r == rank is this block's own.
  template <typename T>
  __device__ T* of(T* array, int r) const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    return r == rank ? array : cluster.map_shared_rank(array, r);
#else
    return array;
#endif
  }
  // A barrier for every thread of the cluster (of the block when it is alone).
  __device__ void sync() const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (ranks > 1) {
      cluster.sync();
      return;
    }
#endif
    __syncthreads();
  }
  // Before the block exits: its shared arrays must outlive the other ranks' reads.
  __device__ void sync_before_exit() const {
    if (ranks > 1) sync();
  }
};

using DeviceInfo = detail::DeviceLimits;

// The current device's limits (cached per device: detail::device_limits); false when they cannot be read.
inline bool device_info(DeviceInfo& info) {
  info = detail::device_limits();
  return info.sms > 0;
}

// Opt in to the device's whole shared memory per block, once per device and kernel.
template <auto Kernel>
bool prepare_kernel(const DeviceInfo& info) {
  return detail::allow_dynamic_smem<Kernel>(info.smem_optin);
}

// Blocks of Kernel (kThreads threads, `smem` bytes of dynamic shared memory) one SM holds at once, at least 1;
// cached per thread, device and size, since prompts launch it eagerly for every layer.
template <auto Kernel, int kThreads>
int resident_blocks(size_t smem) {
  struct Entry {
    int device;
    size_t smem;
    int blocks;
  };
  thread_local std::vector<Entry> cache;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return 1;
  }
  for (const Entry& e : cache) {
    if (e.device == dev && e.smem == smem) return e.blocks;
  }
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, kThreads, smem) != cudaSuccess) {
    cudaGetLastError();
    return 1;
  }
  cache.push_back(Entry{dev, smem, std::max(blocks, 1)});
  return cache.back().blocks;
}

// 9..64 rows of fp16 or int8 weights on the Hopper tensor cores (wgmma; gemv_sm90a.cu), for sm_90 devices. p as
// for the kernels of gemv.cu (m, n, k, x, w, scales, bias, residual, y / y32, gelu, the K/V append); row_tiles
// and chunks_per_rank are set here. kNotSupported where the kernel does not apply (int4, a folded norm, a device
// other than compute capability 9.0, set_gemv_wgmma(0)).
Status launch_wgmma_rows(GemvParams p, WeightType type, bool f32_out, const DeviceInfo& info, cudaStream_t stream);

}  // namespace wisp::kernels::cuda::gemv_detail
