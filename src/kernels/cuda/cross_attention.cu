// The decode step's cross-attention with its query projection (cross_attention.h).
//
// One thread-block cluster of S blocks per (head, row). Rank r of a cluster owns a slice of the projection's
// input columns and a slice of the window's keys. Before the wait for the previous kernel, a block copies its
// slice of the head's 64 W_q rows and its keys' K and V rows into shared memory with cp.async (constants, and
// a window's K/V is written before the decode steps: KvView::Ready::kAll), so their latency overlaps that
// kernel. After the wait only the activation row is new:
//   1. each block multiplies its W_q slice by γ∘(x − x0) (the folded norm of gemv.h RowNorm) and sums d and d²
//      over its columns;
//   2. every block adds the S partial products and sums through distributed shared memory, in rank order
//      (deterministic), and finishes the same query: norm, bias, rounded to fp16 as the GEMV stores it;
//   3. each block runs the attention over its keys from shared memory: 16 groups of 8 lanes, lane i of a group
//      holding head dims [8i, 8i + 8), each group an online softmax over 4 keys at a time (as in
//      decoder_attention.cu), the groups merged through shuffles and the warps through shared memory;
//   4. rank 0 merges the S blocks' softmax states and writes the head's 64 outputs.
#include <cooperative_groups.h>

#include <algorithm>
#include <atomic>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cross_attention.h"

namespace wisp::kernels::cuda {

using detail::row_moments;
using detail::unfold_norm;
using detail::unpack8;
using detail::warp_sum;

namespace {

constexpr int kHeadDim = 64;
constexpr int kThreads = 256;
constexpr int kGroupLanes = 8;
constexpr int kGroups = kThreads / kGroupLanes;
constexpr int kKeysPerGroup = 4;
constexpr int kMaxRanks = 8;

struct Params {
  const __half* x;
  const __half* wq;
  const __half* bq;
  const float* gamma;
  const float* w_gamma;
  const float* w_beta;
  float eps;
  const __half* kv;  // K in columns [0, d), V in [d, 2d)
  int64_t ld, batch_stride;
  const int32_t* slot;
  __half* out;
  int d, n_kv;
  int vecs_per_rank;  // 8-column vectors of the projection's input per block
  int keys_per_rank;
  float scale_log2;  // log2(e)/sqrt(64): scores in log2 units
};

// Dynamic shared memory of one block: W_q slice [64][vecs] (16-byte vectors), K and V [keys][64], γ∘d [vecs·8].
size_t smem_bytes(int vecs, int keys) {
  return size_t(kHeadDim) * vecs * 16 + 2 * size_t(keys) * kHeadDim * sizeof(__half) + size_t(vecs) * 8 * 4;
}

__device__ __forceinline__ void copy16_async(void* smem, const void* gmem) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}

__global__ void __launch_bounds__(kThreads) cross_attention_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  const int ranks = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  const int h = static_cast<int>(blockIdx.x) / ranks, b = static_cast<int>(blockIdx.y);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int vpr = p.vecs_per_rank, kpr = p.keys_per_rank;

  extern __shared__ __align__(16) unsigned char smem[];
  auto* w_s = reinterpret_cast<uint4*>(smem);                   // [64][vpr]
  auto* k_s = reinterpret_cast<__half*>(w_s + kHeadDim * vpr);  // [kpr][64]
  __half* v_s = k_s + kpr * kHeadDim;                           // [kpr][64]
  auto* xg_s = reinterpret_cast<float*>(v_s + kpr * kHeadDim);  // [vpr·8]
  __shared__ float q_part[kHeadDim + 2];                        // partial products, then Σd, Σd²
  __shared__ float q_s[kHeadDim];                               // the query, in log2 units
  __shared__ float2 warp_sums[kThreads / 32];
  __shared__ float w_m[kThreads / 32], w_l[kThreads / 32], w_acc[kThreads / 32][kHeadDim];  // per warp
  __shared__ float blk_m, blk_l, blk_o[kHeadDim];  // this block's softmax state

  const int n_vecs = p.d / 8;
  const int v0 = min(n_vecs, rank * vpr), nv = min(n_vecs, v0 + vpr) - v0;
  const int k0 = min(p.n_kv, rank * kpr), nk = min(p.n_kv, k0 + kpr) - k0;

  // Constants and the cached K/V (KvView::Ready::kAll), before the wait.
  const int64_t seq = p.slot ? p.slot[b] : b;
  const __half* k_g = p.kv + seq * p.batch_stride + static_cast<int64_t>(h) * kHeadDim;
  const __half* v_g = k_g + p.d;
  const __half* w_g = p.wq + static_cast<int64_t>(h) * kHeadDim * p.d + 8 * static_cast<int64_t>(v0);
  for (int i = threadIdx.x; i < kHeadDim * nv; i += kThreads) {
    const int r = i / nv, v = i % nv;
    copy16_async(w_s + r * vpr + v, w_g + static_cast<int64_t>(r) * p.d + 8 * v);
  }
  for (int i = threadIdx.x; i < nk * 8; i += kThreads) {
    const int key = i / 8, c = i % 8;
    const int64_t row = static_cast<int64_t>(k0 + key) * p.ld + 8 * c;
    copy16_async(k_s + key * kHeadDim + 8 * c, k_g + row);
    copy16_async(v_s + key * kHeadDim + 8 * c, v_g + row);
  }
  asm volatile("cp.async.commit_group;\n" ::: "memory");
  float w_gamma = 0.0f, w_beta = 0.0f, bias = 0.0f;
  if (threadIdx.x < kHeadDim) {
    const int j = h * kHeadDim + threadIdx.x;
    w_gamma = p.w_gamma[j], w_beta = p.w_beta[j], bias = __half2float(p.bq[j]);
  }
  detail::wait_prior_kernels();
  detail::allow_next_kernel();

  // 1. γ∘(x − x0) of this block's columns, and the sums of x − x0 and its square.
  const __half* xr = p.x + static_cast<int64_t>(b) * p.d;
  const float x0 = __half2float(xr[0]);
  float s1 = 0.0f, s2 = 0.0f;
  for (int v = threadIdx.x; v < nv; v += kThreads) {
    const int64_t col = 8 * static_cast<int64_t>(v0 + v);
    float f[8];
    unpack8(*reinterpret_cast<const uint4*>(xr + col), f);
    const float4 ga = __ldg(reinterpret_cast<const float4*>(p.gamma + col));
    const float4 gb = __ldg(reinterpret_cast<const float4*>(p.gamma + col + 4));
    const float g[8] = {ga.x, ga.y, ga.z, ga.w, gb.x, gb.y, gb.z, gb.w};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float dv = f[e] - x0;
      s1 += dv;
      s2 = fmaf(dv, dv, s2);
      xg_s[8 * v + e] = dv * g[e];
    }
  }
  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  if (lane == 0) warp_sums[warp] = make_float2(s1, s2);
  asm volatile("cp.async.wait_all;\n" ::: "memory");
  __syncthreads();

  // This block's share of the 64 products: kRowLanes adjacent threads per W_q row, vectors in turn.
  {
    constexpr int kRowLanes = kThreads / kHeadDim;
    const int r = threadIdx.x / kRowLanes, part = threadIdx.x % kRowLanes;
    float acc = 0.0f;
    for (int v = part; v < nv; v += kRowLanes) {
      float w[8];
      unpack8(w_s[r * vpr + v], w);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc = fmaf(w[e], xg_s[8 * v + e], acc);
    }
#pragma unroll
    for (int o = kRowLanes / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (part == 0) q_part[r] = acc;
    if (threadIdx.x == 0) {
      float t1 = 0.0f, t2 = 0.0f;
      for (int w = 0; w < kThreads / 32; ++w) t1 += warp_sums[w].x, t2 += warp_sums[w].y;
      q_part[kHeadDim] = t1;
      q_part[kHeadDim + 1] = t2;
    }
  }
  cluster.sync();

  // 2. The whole query, the same in every block of the cluster.
  if (threadIdx.x < kHeadDim) {
    float v = 0.0f, t1 = 0.0f, t2 = 0.0f;
    for (int q = 0; q < ranks; ++q) {
      const float* src = cluster.map_shared_rank(q_part, q);
      v += src[threadIdx.x];
      t1 += src[kHeadDim];
      t2 += src[kHeadDim + 1];
    }
    const float y = unfold_norm(v, row_moments(t1, t2, p.d, p.eps), w_gamma, w_beta) + bias;
    q_s[threadIdx.x] = __half2float(__float2half_rn(y)) * p.scale_log2;
  }
  __syncthreads();

  // 3. The attention over this block's keys.
  const int grp = threadIdx.x / kGroupLanes, sub = threadIdx.x % kGroupLanes;
  float qv[8], acc[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) qv[e] = q_s[8 * sub + e], acc[e] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  // The bound is uniform over the block, so every lane reaches the shuffles.
  for (int base = 0; base < nk; base += kGroups * kKeysPerGroup) {
    float sc[kKeysPerGroup];
#pragma unroll
    for (int u = 0; u < kKeysPerGroup; ++u) {
      const int key = base + grp * kKeysPerGroup + u;
      float kf[8];
      unpack8(*reinterpret_cast<const uint4*>(k_s + min(key, nk - 1) * kHeadDim + 8 * sub), kf);
      float d = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; ++e) d = fmaf(qv[e], kf[e], d);
      d += __shfl_xor_sync(0xffffffffu, d, 1);
      d += __shfl_xor_sync(0xffffffffu, d, 2);
      d += __shfl_xor_sync(0xffffffffu, d, 4);
      sc[u] = key < nk ? d : -INFINITY;
    }
    float mx = m;
#pragma unroll
    for (int u = 0; u < kKeysPerGroup; ++u) mx = fmaxf(mx, sc[u]);
    const float m_use = mx == -INFINITY ? 0.0f : mx;
    const float alpha = exp2f(m - m_use);
    l *= alpha;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] *= alpha;
#pragma unroll
    for (int u = 0; u < kKeysPerGroup; ++u) {
      const int key = base + grp * kKeysPerGroup + u;
      const float w = exp2f(sc[u] - m_use);
      float vf[8];
      unpack8(*reinterpret_cast<const uint4*>(v_s + min(key, nk - 1) * kHeadDim + 8 * sub), vf);
      l += w;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fmaf(w, vf[e], acc[e]);
    }
    m = mx;
  }
  // The four groups of a warp merge through shuffles (lanes 8 and 16 apart hold the same dims), then the warps
  // through shared memory.
#pragma unroll
  for (int o = kGroupLanes; o < 32; o <<= 1) {
    const float m_o = __shfl_xor_sync(0xffffffffu, m, o), l_o = __shfl_xor_sync(0xffffffffu, l, o);
    const float mx = fmaxf(m, m_o), m_use = mx == -INFINITY ? 0.0f : mx;
    const float a_self = exp2f(m - m_use), a_other = exp2f(m_o - m_use);
    l = l * a_self + l_o * a_other;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = acc[e] * a_self + __shfl_xor_sync(0xffffffffu, acc[e], o) * a_other;
    m = mx;
  }
  if (lane == 0) w_m[warp] = m, w_l[warp] = l;
  if (lane < kGroupLanes) {
#pragma unroll
    for (int e = 0; e < 8; ++e) w_acc[warp][8 * lane + e] = acc[e];
  }
  __syncthreads();
  if (threadIdx.x < kHeadDim) {
    float mx = -INFINITY;
    for (int w = 0; w < kThreads / 32; ++w) mx = fmaxf(mx, w_m[w]);
    float sum = 0.0f, o = 0.0f;
    if (mx > -INFINITY) {
      for (int w = 0; w < kThreads / 32; ++w) {
        const float f = exp2f(w_m[w] - mx);  // 0 for a warp that saw no key
        sum = fmaf(w_l[w], f, sum);
        o = fmaf(w_acc[w][threadIdx.x], f, o);
      }
    }
    blk_o[threadIdx.x] = o;
    if (threadIdx.x == 0) blk_m = mx, blk_l = sum;
  }
  cluster.sync();

  // 4. Rank 0 merges the blocks' states.
  if (rank == 0 && threadIdx.x < kHeadDim) {
    float mx = -INFINITY;
    for (int q = 0; q < ranks; ++q) mx = fmaxf(mx, *cluster.map_shared_rank(&blk_m, q));
    float sum = 0.0f, o = 0.0f;
    for (int q = 0; q < ranks; ++q) {
      const float w = exp2f(*cluster.map_shared_rank(&blk_m, q) - mx);
      sum = fmaf(*cluster.map_shared_rank(&blk_l, q), w, sum);
      o = fmaf(cluster.map_shared_rank(blk_o, q)[threadIdx.x], w, o);
    }
    p.out[static_cast<int64_t>(b) * p.d + h * kHeadDim + threadIdx.x] = __float2half_rn(sum > 0.0f ? o / sum : 0.0f);
  }
  cluster.sync();  // the other blocks' shared memory must outlive rank 0's reads
#endif
}

struct Device {
  int major = 0, sms = 0, smem_optin = 0;
};

bool device_info(Device& info) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&info.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return true;
}

// Opts in to the device's whole shared memory per block, once per device; returns the most dynamic shared memory
// a block may then take (the opt-in limit less the kernel's static arrays), 0 on failure.
size_t prepare_kernel(const Device& info) {
  static std::atomic<uint64_t> done{0};
  cudaFuncAttributes attributes{};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaFuncGetAttributes(&attributes, cross_attention_kernel) != cudaSuccess ||
      attributes.sharedSizeBytes >= static_cast<size_t>(info.smem_optin)) {
    cudaGetLastError();
    return 0;
  }
  const size_t dynamic = static_cast<size_t>(info.smem_optin) - attributes.sharedSizeBytes;
  const uint64_t bit = uint64_t{1} << (dev & 63);
  if (done.load(std::memory_order_acquire) & bit) return dynamic;
  if (cudaFuncSetAttribute(cross_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(dynamic)) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  done.fetch_or(bit, std::memory_order_acq_rel);
  return dynamic;
}

}  // namespace

Status cross_attention_with_query(const __half* x, const WeightView& wq, const __half* bq, const RowNorm& norm,
                                  const KvView& cross, int64_t n_kv, __half* out, int64_t batch, int64_t n_head,
                                  int64_t head_dim, cudaStream_t stream) {
  if (batch < 1 || n_head < 1 || n_kv < 1 || n_kv > INT32_MAX || n_head > 4096) return Status::kInvalidArgument;
  if (!x || !wq.data || !bq || !cross.data || !out || !detail::aligned16(x) || !detail::aligned16(wq.data) ||
      !detail::aligned16(cross.data) || cross.ld % 8 != 0 || cross.batch_stride % 8 != 0 || cross.batch_stride < 0) {
    return Status::kInvalidArgument;
  }
  const int64_t d = n_head * head_dim;
  if (cross.ld < 2 * d) return Status::kInvalidArgument;
  if (head_dim != kHeadDim || wq.type != WeightType::kF16 || cross.type != KvType::kF16 || !norm.gamma ||
      !norm.w_gamma || !norm.w_beta || !detail::aligned16(norm.gamma) || batch > kCrossAttentionMaxRows ||
      cross.ready != KvView::Ready::kAll) {
    return Status::kNotSupported;
  }
  Device info;
  if (!device_info(info)) return Status::kCudaError;
  if (info.major < 9) return Status::kNotSupported;
  // Ranks per (head, row): about one block per SM, more where one block's slices would not fit (two blocks an
  // SM, 8 ranks for large-v2's 20 heads, measured 7 % slower than one, 6 ranks: docs/cuda.md).
  const int64_t clusters = batch * n_head, n_vecs = d / 8;
  int ranks = static_cast<int>(std::clamp<int64_t>(info.sms / clusters, 1, kMaxRanks));
  auto vecs = [&](int r) { return static_cast<int>((n_vecs + r - 1) / r); };
  auto keys = [&](int r) { return static_cast<int>((n_kv + r - 1) / r); };
  const size_t max_dynamic = prepare_kernel(info);
  if (max_dynamic == 0) return Status::kCudaError;
  while (ranks < kMaxRanks && smem_bytes(vecs(ranks), keys(ranks)) > max_dynamic / 2) ++ranks;
  const size_t smem = smem_bytes(vecs(ranks), keys(ranks));
  if (smem > max_dynamic) return Status::kNotSupported;

  Params p{};
  p.x = x;
  p.wq = static_cast<const __half*>(wq.data);
  p.bq = bq;
  p.gamma = norm.gamma;
  p.w_gamma = norm.w_gamma;
  p.w_beta = norm.w_beta;
  p.eps = norm.eps;
  p.kv = static_cast<const __half*>(cross.data);
  p.ld = cross.ld;
  p.batch_stride = cross.batch_stride;
  p.slot = cross.slot;
  p.out = out;
  p.d = static_cast<int>(d);
  p.n_kv = static_cast<int>(n_kv);
  p.vecs_per_rank = vecs(ranks);
  p.keys_per_rank = keys(ranks);
  p.scale_log2 = 1.4426950408889634f / 8.0f;
  const dim3 grid(static_cast<unsigned>(n_head * ranks), static_cast<unsigned>(batch));
  return detail::launch_chained(cross_attention_kernel, grid, dim3(kThreads), smem, stream,
                                static_cast<unsigned>(ranks), p);
}

}  // namespace wisp::kernels::cuda
