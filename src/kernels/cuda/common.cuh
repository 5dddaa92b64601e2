// Helpers shared by the .cu files of this folder (not part of the kernels' interface).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>

#include "kernels/cuda/cuda_kernels.h"

namespace wisp::kernels::cuda::detail {

constexpr int kWarp = 32;

// The status of the launch just made (configuration errors are reported here, not at the next sync).
inline Status launch_status() { return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kCudaError; }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- programmatic dependent launch (set_programmatic_launch in cuda_kernels.h) ----
//
// A kernel launched with launch_chained() may begin while the kernel before it in the stream still runs. It
// must call wait_prior_kernels() before it reads anything an earlier kernel writes and before it writes
// anything an earlier kernel reads; only constant operands (weights, biases, scales) may be read before.
// Every chained kernel calls it unconditionally, so "the kernel before me has finished" holds transitively
// down the stream. allow_next_kernel() lets the next chained kernel's blocks be scheduled (they then wait
// in wait_prior_kernels() for this whole grid); kernels call it right after their own wait, so at most two
// kernels are in flight and the next one's weight loads overlap this one's work. Both are no-ops below
// sm_90 and in kernels launched without the attribute.
__device__ __forceinline__ void wait_prior_kernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// What launch decisions on the host need to know about the current device, read once per device (they ask it
// for every kernel, and a decode step launches hundreds); all zero when it cannot be read.
struct DeviceLimits {
  int major = 0, minor = 0;  // compute capability
  int sms = 0;               // multiprocessors
  int smem_optin = 0;        // shared memory a block may opt in to, bytes
};
inline DeviceLimits device_limits() {
  constexpr int kDevices = 64;
  static std::atomic<bool> known[kDevices] = {};
  static DeviceLimits limits[kDevices];
  static std::mutex writing;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0) {
    cudaGetLastError();
    return {};
  }
  const bool cached = dev < kDevices;  // more devices than that: read each time
  if (cached && known[dev].load(std::memory_order_acquire)) return limits[dev];
  DeviceLimits l;
  if (cudaDeviceGetAttribute(&l.major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&l.minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&l.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  if (!cached) return l;
  const std::lock_guard<std::mutex> lock(writing);
  if (!known[dev].load(std::memory_order_relaxed)) {
    limits[dev] = l;
    known[dev].store(true, std::memory_order_release);
  }
  return l;
}

// The current device's compute capability as 10·major + minor (90 for an H100 / H200), 0 when it cannot be read.
inline int device_compute_capability() {
  const DeviceLimits l = device_limits();
  return 10 * l.major + l.minor;
}

// Whether the current device runs programmatic dependent launches (compute capability 9.0+).
inline bool device_chains_launches() { return device_compute_capability() >= 90; }

// Launches `kernel` with the programmatic-dependent-launch attribute when it is on and the device has it
// (plus a thread-block cluster of cluster_x blocks when cluster_x > 1). The kernel must follow the rules
// above. Returns the launch's status.
template <typename... Params, typename... Args>
Status launch_chained(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      unsigned cluster_x, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attributes[2];
  unsigned n = 0;
  if (programmatic_launch() && device_chains_launches()) {
    attributes[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster_x > 1) {
    attributes[n].id = cudaLaunchAttributeClusterDimension;
    attributes[n].val.clusterDim.x = cluster_x;
    attributes[n].val.clusterDim.y = 1;
    attributes[n].val.clusterDim.z = 1;
    ++n;
  }
  config.attrs = attributes;
  config.numAttrs = n;
  if (cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...) != cudaSuccess) {
    cudaGetLastError();
    return Status::kCudaError;
  }
  return launch_status();
}

inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `shared` holds ≥ 32 floats; blockDim.x a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(v);
}

// 2^x in one MUFU instruction. exp2f adds range fixes for results below 2^-126 (three more instructions); the
// softmax weights that need them add nothing a sum of at least 1 (the row max's own weight) can hold.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

// 8 halves <-> 8 floats through one 16-byte register (vectorised fp16 loads and stores).
__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  const auto* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __half22float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}
// Two floats rounded to one half2, as the 32-bit register an mma / wgmma fragment holds (lo in the low half).
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  uint4 u;
  auto* h = reinterpret_cast<__half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
  return u;
}

// d += a · b for one mma.sync m16n8k16 tile (sm_80+): a 16×16 (row), b 16×8 (col), d 16×8 fp32. Lane (g, t) =
// (lane / 4, lane % 4) holds a0 = a[g][2t, 2t+1], a1 = a[g+8][2t, 2t+1], a2 = a[g][2t+8, 2t+9], a3 = a[g+8][2t+8,
// 2t+9], b0 = b[2t, 2t+1][g], b1 = b[2t+8, 2t+9][g], and d = {d[g][2t], d[g][2t+1], d[g+8][2t], d[g+8][2t+1]}.
__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Bytes (16, 8 or 4) global → shared memory without registers; only the first `valid` of them are read, the
// rest of the destination is zero-filled (cp.async's source size).
template <int kBytes>
__device__ __forceinline__ void copy_async_zfill(void* smem, const void* gmem, int valid) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid) : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gmem), "n"(kBytes), "r"(valid)
                 : "memory");
  }
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Until at most N of this thread's committed copy groups are still pending.
template <int N>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Lets Kernel take up to `bytes` of dynamic shared memory (beyond the default 48 KiB), once per device (each
// time on devices beyond the first 64, as device_limits()).
template <auto Kernel>
bool allow_dynamic_smem(int bytes) {
  static std::atomic<uint64_t> done{0};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0) return false;
  const uint64_t bit = dev < 64 ? uint64_t{1} << dev : 0;
  if (done.load(std::memory_order_acquire) & bit) return true;
  if (cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) return false;
  done.fetch_or(bit, std::memory_order_acq_rel);
  return true;
}

// The folded row norm (gemv.h RowNorm) works on the row shifted by its first column, d = x − x[r, 0], so that neither
// the fp32 sums nor the fp16 products lose digits to a large mean. From the sums of d and d² over the k columns:
// (mean of d, 1/sqrt(variance + eps)).
__device__ __forceinline__ float2 row_moments(float s1, float s2, int k, float eps) {
  const float inv_k = 1.0f / static_cast<float>(k);
  const float md = s1 * inv_k;
  return make_float2(md, rsqrtf(fmaxf(fmaf(s2, inv_k, -md * md), 0.0f) + eps));
}
// v = Σ_i W[j, i]·γ_i·d_i of one output → Σ_i W[j, i]·x̂_i = ρ·(v − mean(d)·wγ[j]) + wβ[j]; m from row_moments.
__device__ __forceinline__ float unfold_norm(float v, float2 m, float w_gamma, float w_beta) {
  return fmaf(m.y, fmaf(-m.x, w_gamma, v), w_beta);
}

}  // namespace wisp::kernels::cuda::detail
