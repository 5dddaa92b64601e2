// Small-batch mixed-precision GEMV (gemv.h): every weight byte is read once for all m ≤ 64 rows (m ≤ 8 on either
// of the first two kernels; 9..64 on a tensor-core kernel that takes them all in one block, or for fp16 weights on
// an H100/H200 on the wgmma kernel of gemv_sm90a.cu).
//
// The host picks per shape (dispatch()). At layer sizes (a few MB) the time is mostly a fixed cost, and a plain
// CUDA-core kernel has the smallest; where the FMAs of many rows would bound it (m ≥ 3 on wide layers) and on
// the logits, a tensor-core kernel wins.
//
// ---- CUDA-core kernel (simt_gemv_kernel) ----
//
// One launch, no clusters, no atomics, no shared-memory staging before the first load. A "team" of L
// threads (a power of two, 4..256, chosen per shape on the host) owns J adjacent weight rows; its threads
// take the rows' 16-byte vectors (8 fp16, 16 int8 or 32 int4 columns) in turn, v = t, t + L, ..., with U
// vectors of each of the J rows loaded before any is used (J·U loads in flight per thread); at m = 1 the
// thread's next round is also copied into shared memory (cp.async) before the wait (kTailRounds). The host
// picks the smallest L that fills the share of the resident threads set by set_gemv_fill() in one wave.
// Weights are converted to exact fp32 values (fp16 directly; int8 and int4 through float/half exponent
// tricks), the activations of all M rows are read through L1 (the same few KB for every thread) and converted
// once per 8 columns for the J rows: the J·M fp32 accumulators take exact products q·x. int4 sums each
// 32-column vector (inside one scale group) into its own partials and scales them once; int8 scales once per
// row at the end. The team reduces with shuffles and, beyond a warp, through shared memory, in a fixed order
// (deterministic).
//
// ---- Tensor-core kernel (mma_gemv_kernel) ----
//
// The products run on the tensor cores with the operands swapped: mma.sync m16n8k16 takes 16 weight rows as
// A and (up to) 8 activation rows as B, so one instruction serves 8 rows (rows ≥ m are zeros). With more rows
// (rows_gemv_kernel, below) a block takes up to 8 groups of 8 and issues one mma per group with the same A
// fragment, converted once.
//
// Loads. Lane (g, t) of a warp (g = lane / 4, t = lane % 4) owns weight rows g and g + 8 of its 16-row tile.
// Per "chunk" of k, each lane loads one vector from each of its rows: 16 bytes of fp16 (8 columns) or int8
// (16 columns), 8 bytes of int4 (16 columns), so the four lanes of a quad read one contiguous run of a row.
// A sum over k does not care about the order of its terms, so each lane feeds the mma with its own columns
// in whatever order its registers hold them, and the activations it multiplies them with (from shared
// memory) are the same columns in the same order. No shuffles: fp16 words go straight into the A fragment,
// int8 and int4 are turned into exact fp16 integers with the 0x6400 (1024.0) exponent trick. For int4 that
// trick yields the nibble pairs (0, 4), (1, 5), (2, 6), (3, 7) of each 32-bit word, so the activations of
// an int4 GEMV are stored in that order in shared memory. The int4 quad reads 8 bytes a lane (64 columns a
// chunk) so that a chunk never straddles a scale group (64 or 128): each chunk is multiplied into its own
// fp32 tile and scaled once, so q·x is exact before the fp32 sum. int8 scales once per row at the end.
//
// Work split. A block of 4 warps owns 1, 2 or 4 row tiles (the warps of a tile split the block's k range),
// and a thread-block cluster of 1..8 blocks (sm_90) splits k further. The partial tiles meet in shared
// memory; rank 0 of the cluster reads the others' through distributed shared memory, adds them in a fixed
// order (no atomics, deterministic) and runs the epilogue. The host picks the split that gives at least
// ~3 blocks per SM with the fewest activation copies (more tiles per block), so that a 1280-row matrix
// still keeps every SM's loads in flight.
#include <algorithm>
#include <atomic>
#include <climits>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/gemv_internal.cuh"

namespace wisp::kernels::cuda {

using detail::aligned16;
using detail::allow_next_kernel;
using detail::gelu_erf;
using detail::grid_for;
using detail::launch_chained;
using detail::launch_status;
using detail::mma_16816;
using detail::pack8;
using detail::row_moments;
using detail::unfold_norm;
using detail::unpack8;
using detail::wait_prior_kernels;
using detail::warp_sum;
using gemv_detail::append_kv;
using gemv_detail::ClusterRanks;
using gemv_detail::commit_async;
using gemv_detail::copy16_async;
using gemv_detail::copy_async_zfill;
using gemv_detail::device_info;
using gemv_detail::DeviceInfo;
using gemv_detail::GemvParams;
using gemv_detail::h2_sub;
using gemv_detail::i8_to_h2;
using gemv_detail::prepare_kernel;
using gemv_detail::resident_blocks;
using gemv_detail::store_output;
using gemv_detail::wait_async;

namespace {

// Streaming loads: read once, so kept out of L1; the L2 fetches whole 256-byte runs of the row.
__device__ __forceinline__ void ld_stream(uint4& r, const void* p) {
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
}
__device__ __forceinline__ void ld_stream(uint2& r, const void* p) {
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0, %1}, [%2];\n" : "=r"(r.x), "=r"(r.y) : "l"(p));
}

__device__ __forceinline__ uint32_t h2_fma(uint32_t a, uint32_t b, uint32_t c) {
  const __half2 r = __hfma2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b),
                            *reinterpret_cast<const __half2*>(&c));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// 8 int4 → 4 half2 holding columns (0, 4), (1, 5), (2, 6), (3, 7), exact: nibble u under 0x6400 is 1024 + u
// (1024 + 16u for the high nibble of a byte, rescaled by 1/16), minus 1024 + 8.
__device__ __forceinline__ void i4_to_h2(uint32_t w, uint32_t (&p)[4]) {
  constexpr uint32_t kMagic = 0x64006400u, k1032 = 0x64086408u, kSixteenth = 0x2c002c00u, kMinus72 = 0xd480d480u;
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    const uint32_t v = w >> (8 * s);
    p[2 * s] = h2_sub((v & 0x000f000fu) | kMagic, k1032);
    p[2 * s + 1] = h2_fma((v & 0x00f000f0u) | kMagic, kSixteenth, kMinus72);
  }
}

// ---- tensor-core kernel --------------------------------------------------------------------------------

constexpr int kWarps = 4;
constexpr int kMmaThreads = kWarps * 32;
constexpr int kMaxCluster = 8;
// Halves of padding per shared activation row: the rows start 16 bytes apart in the banks, so the 8 rows a
// warp reads at one column fall on distinct banks.
constexpr int kPad = 8;

// Per weight type: what a lane loads per row and chunk (Raw, kElems columns), and how many chunks it keeps
// in flight (kUnroll: 128 bytes per row and lane for every type).
template <WeightType T>
struct Format;
template <>
struct Format<WeightType::kF16> {
  using Raw = uint4;
  static constexpr int kElems = 8, kUnroll = 4;
};
template <>
struct Format<WeightType::kI8> {
  using Raw = uint4;
  static constexpr int kElems = 16, kUnroll = 4;
};
template <>
struct Format<WeightType::kI4> {
  using Raw = uint2;
  static constexpr int kElems = 16, kUnroll = 8;
};
template <WeightType T>
constexpr int kChunk = 4 * Format<T>::kElems;  // columns a quad covers per load

// Byte offset of column e in a weight row.
template <WeightType T>
__host__ __device__ constexpr int64_t col_bytes(int64_t e) {
  return T == WeightType::kF16 ? 2 * e : T == WeightType::kI8 ? e : e / 2;
}

// One chunk of one lane: rows a (g) and b (g + 8) against NG groups of activation columns: xs[q] is row
// 8q + g of the shared activations, or zeros where has_x[q] is false (row ≥ m). The weights are converted once
// for all groups. sa, sb: the rows' int4 group scales.
template <WeightType T, int NG>
__device__ __forceinline__ void mma_chunk(float (&acc)[NG][4], const typename Format<T>::Raw& a,
                                          const typename Format<T>::Raw& b, const uint4* const (&xs)[NG],
                                          const bool (&has_x)[NG], float sa, float sb) {
  const uint4 zero = make_uint4(0, 0, 0, 0);
  if constexpr (T == WeightType::kF16) {
#pragma unroll
    for (int q = 0; q < NG; ++q) {
      const uint4 x = has_x[q] ? xs[q][0] : zero;
      mma_16816(acc[q], a.x, b.x, a.y, b.y, x.x, x.y);
      mma_16816(acc[q], a.z, b.z, a.w, b.w, x.z, x.w);
    }
  } else if constexpr (T == WeightType::kI8) {
    const uint32_t wa[4] = {a.x, a.y, a.z, a.w}, wb[4] = {b.x, b.y, b.z, b.w};
    uint32_t alo[4], ahi[4], blo[4], bhi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      i8_to_h2(wa[i], alo[i], ahi[i]);
      i8_to_h2(wb[i], blo[i], bhi[i]);
    }
#pragma unroll
    for (int q = 0; q < NG; ++q) {
      const uint4 x0 = has_x[q] ? xs[q][0] : zero, x1 = has_x[q] ? xs[q][1] : zero;
      const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) mma_16816(acc[q], alo[i], blo[i], ahi[i], bhi[i], xw[2 * i], xw[2 * i + 1]);
    }
  } else {
    const uint32_t wa[2] = {a.x, a.y}, wb[2] = {b.x, b.y};
    uint32_t pa[2][4], pb[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      i4_to_h2(wa[i], pa[i]);
      i4_to_h2(wb[i], pb[i]);
    }
#pragma unroll
    for (int q = 0; q < NG; ++q) {
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const uint4 x = has_x[q] ? xs[q][i] : zero;
        mma_16816(part, pa[i][0], pb[i][0], pa[i][1], pb[i][1], x.x, x.y);
        mma_16816(part, pa[i][2], pb[i][2], pa[i][3], pb[i][3], x.z, x.w);
      }
      acc[q][0] = fmaf(sa, part[0], acc[q][0]);
      acc[q][1] = fmaf(sa, part[1], acc[q][1]);
      acc[q][2] = fmaf(sb, part[2], acc[q][2]);
      acc[q][3] = fmaf(sb, part[3], acc[q][3]);
    }
  }
}

// 8 activations (0..7) → the order of the int4 half2 pairs: 0, 4, 1, 5, 2, 6, 3, 7.
__device__ __forceinline__ uint4 interleave_i4(const uint4& v) {
  return make_uint4(__byte_perm(v.x, v.z, 0x5410), __byte_perm(v.x, v.z, 0x7632), __byte_perm(v.y, v.w, 0x5410),
                    __byte_perm(v.y, v.w, 0x7632));
}

// One group of 8 activation rows per block; more rows (the folded norm's, whose statistics are kept for one group)
// run as further blocks along grid y, which read the weights again.
template <WeightType T, bool kF32Out, bool kNorm>
__global__ void __launch_bounds__(kMmaThreads) mma_gemv_kernel(const GemvParams p) {
  constexpr int NG = 1;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using Raw = typename Format<T>::Raw;
  constexpr int kElems = Format<T>::kElems, kUnroll = Format<T>::kUnroll, kC = kChunk<T>;
  extern __shared__ __align__(16) unsigned char smem[];

  const ClusterRanks cluster;
  const int ranks = cluster.ranks, rank = cluster.rank;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  // This block's activation rows [row0, row0 + m): NG groups of 8.
  constexpr int kRows = NG * kGemvMaxRows;
  const int row0 = static_cast<int>(blockIdx.y) * kRows;
  const int m = min(kRows, p.m - row0);
  const __half* x = p.x + static_cast<int64_t>(row0) * p.k;
  const int splits = kWarps / p.row_tiles;
  const int tile = warp % p.row_tiles, ksub = warp / p.row_tiles;
  const int j0 = (static_cast<int>(blockIdx.x) / ranks * p.row_tiles + tile) * 16;

  // This block's chunks [cb0, cb1), and this warp's share [c0, c1).
  const int n_chunks = (p.k + kC - 1) / kC;
  const int cb0 = min(n_chunks, rank * p.chunks_per_rank), cb1 = min(n_chunks, cb0 + p.chunks_per_rank);
  const int per_warp = (cb1 - cb0 + splits - 1) / splits;
  const int c0 = min(cb1, cb0 + ksub * per_warp), c1 = min(cb1, c0 + per_warp);

  // Rows past n read row n − 1 (valid memory); their results are dropped.
  const int64_t row_bytes = col_bytes<T>(p.k);
  const int ja = min(j0 + g, p.n - 1), jb = min(j0 + g + 8, p.n - 1);
  const char* wa = static_cast<const char*>(p.w) + ja * row_bytes;
  const char* wb = static_cast<const char*>(p.w) + jb * row_bytes;
  const int n_groups = p.k >> (p.group_shift + 6);

  Raw ra[kUnroll], rb[kUnroll];
  float sa[kUnroll], sb[kUnroll];
  auto load = [&](int c) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int e = (c + u) * kC + t * kElems;
      if (c + u < c1 && e < p.k) {
        ld_stream(ra[u], wa + col_bytes<T>(e));
        ld_stream(rb[u], wb + col_bytes<T>(e));
      } else {
        ra[u] = rb[u] = Raw{};
      }
      if constexpr (T == WeightType::kI4) {
        const int grp = min(c + u, n_chunks - 1) >> p.group_shift;
        sa[u] = __ldg(p.scales + static_cast<int64_t>(ja) * n_groups + grp);
        sb[u] = __ldg(p.scales + static_cast<int64_t>(jb) * n_groups + grp);
      } else {
        sa[u] = sb[u] = 1.0f;
      }
    }
  };
  // The first weights (constants) are requested before waiting for the kernels that write the activations,
  // so their latency overlaps the end of those kernels and the staging below.
  if (c0 < c1) load(c0);
  wait_prior_kernels();
  allow_next_kernel();

  // Shared memory: the activations, the partial tiles, each warp's sums for the folded norm (all dynamic: the
  // plan may take every byte the block can have).
  const int width = p.chunks_per_rank * kC, stride = width + kPad;
  auto* xs = reinterpret_cast<__half*>(smem);
  auto* partial = reinterpret_cast<float4*>(smem + sizeof(__half) * m * stride);
  auto* row_sums = reinterpret_cast<float2*>(partial + NG * kMmaThreads);  // [kWarps][kGemvMaxRows]

  // Activations [m, k range of this block] → shared memory (zeros past k), in the order the lanes use. With
  // the folded norm, (x − x[r, 0])·γ, and each thread sums its columns' x − x[r, 0] and squares per row (in
  // registers, selected by an unrolled compare: the rows of one thread's vectors vary).
  const int64_t k_base = static_cast<int64_t>(cb0) * kC;
  float2 sums[kNorm ? kGemvMaxRows : 1] = {};
  for (int i = threadIdx.x; i < m * (width / 8); i += kMmaThreads) {
    const int r = i / (width / 8), v = i % (width / 8);
    const int64_t e = k_base + 8 * v;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (e < p.k) {
      const __half* xr = x + static_cast<int64_t>(r) * p.k;
      val = *reinterpret_cast<const uint4*>(xr + e);
      if constexpr (kNorm) {
        const float x0 = __half2float(xr[0]);
        float f[8];
        unpack8(val, f);
        const float4 g0 = __ldg(reinterpret_cast<const float4*>(p.ln_gamma + e));
        const float4 g1 = __ldg(reinterpret_cast<const float4*>(p.ln_gamma + e + 4));
        const float g[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
        float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
        for (int c = 0; c < 8; ++c) {
          const float dv = f[c] - x0;
          s1 += dv;
          s2 = fmaf(dv, dv, s2);
          f[c] = dv * g[c];
        }
        val = pack8(f);
#pragma unroll
        for (int q = 0; q < kGemvMaxRows; ++q) {
          if (q == r) sums[q].x += s1, sums[q].y += s2;
        }
      }
    }
    if constexpr (T == WeightType::kI4) val = interleave_i4(val);
    *reinterpret_cast<uint4*>(xs + r * stride + 8 * v) = val;
  }
  if constexpr (kNorm) {
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; ++r) {
      if (r >= m) break;
      const float s1 = warp_sum(sums[r].x), s2 = warp_sum(sums[r].y);
      if (lane == 0) row_sums[warp * kGemvMaxRows + r] = make_float2(s1, s2);
    }
  }
  __syncthreads();

  float acc[NG][4] = {};
  bool has_x[NG];  // rows ≥ m multiply zeros (the pointer stays inside the array)
  const __half* x_lane[NG];
#pragma unroll
  for (int q = 0; q < NG; ++q) {
    const int r = q * kGemvMaxRows + g;
    has_x[q] = r < m;
    x_lane[q] = xs + min(r, m - 1) * stride + t * kElems;
  }
  for (int c = c0; c < c1; c += kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (c + u < c1) {
        const uint4* xv[NG];
#pragma unroll
        for (int q = 0; q < NG; ++q) xv[q] = reinterpret_cast<const uint4*>(x_lane[q] + (c + u - cb0) * kC);
        mma_chunk<T, NG>(acc, ra[u], rb[u], xv, has_x, sa[u], sb[u]);
      }
    }
    if (c + kUnroll < c1) load(c + kUnroll);
  }

  // Partial tiles: the k-split warps of this block, then the blocks of the cluster, in a fixed order.
#pragma unroll
  for (int q = 0; q < NG; ++q)
    partial[q * kMmaThreads + threadIdx.x] = make_float4(acc[q][0], acc[q][1], acc[q][2], acc[q][3]);
  cluster.sync();
  if (rank == 0 && ksub == 0) {
    // One rank's partials are all requested before any is added (distributed shared memory has a round trip of
    // its own); the order of the sums is fixed, rank by rank and split by split.
    float s[NG][4] = {};
    for (int r = 0; r < ranks; ++r) {
      const float4* src = cluster.of(partial, r);
      float4 v[kWarps][NG];
#pragma unroll
      for (int q = 0; q < kWarps; ++q) {
#pragma unroll
        for (int grp = 0; grp < NG; ++grp) {
          if (q < splits) v[q][grp] = src[grp * kMmaThreads + (q * p.row_tiles + tile) * 32 + lane];
        }
      }
#pragma unroll
      for (int q = 0; q < kWarps; ++q) {
#pragma unroll
        for (int grp = 0; grp < NG; ++grp) {
          if (q >= splits) continue;
          s[grp][0] += v[q][grp].x;
          s[grp][1] += v[q][grp].y;
          s[grp][2] += v[q][grp].z;
          s[grp][3] += v[q][grp].w;
        }
      }
    }
    // The folded norm: the statistics of this lane's rows 2t and 2t + 1, over every warp and block.
    float2 moments[2] = {};
    if constexpr (kNorm) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int r = min(2 * t + e, m - 1);
        float s1 = 0.0f, s2 = 0.0f;
        for (int q = 0; q < ranks; ++q) {
          const float2* src = cluster.of(row_sums, q);
          float2 v[kWarps];
#pragma unroll
          for (int w = 0; w < kWarps; ++w) v[w] = src[w * kGemvMaxRows + r];
#pragma unroll
          for (int w = 0; w < kWarps; ++w) {
            s1 += v[w].x;
            s2 += v[w].y;
          }
        }
        moments[e] = row_moments(s1, s2, p.k, p.ln_eps);
      }
    }
    // s[grp]: (row g, x row 8·grp + 2t), (row g, 8·grp + 2t + 1), (row g + 8, 8·grp + 2t),
    // (row g + 8, 8·grp + 2t + 1).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = j0 + g + 8 * h;
      if (j >= p.n) continue;
      const float scale = T == WeightType::kI8 ? __ldg(p.scales + j) : 1.0f;
      const float bias = !kF32Out && p.bias ? __half2float(p.bias[j]) : 0.0f;
      const float w_gamma = kNorm ? __ldg(p.ln_w_gamma + j) : 0.0f, w_beta = kNorm ? __ldg(p.ln_w_beta + j) : 0.0f;
#pragma unroll
      for (int grp = 0; grp < NG; ++grp) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int r = grp * kGemvMaxRows + 2 * t + e;
          if (r >= m) continue;
          const int64_t o = static_cast<int64_t>(row0 + r) * p.n + j;
          float v = s[grp][2 * h + e] * scale;
          if constexpr (kNorm) v = unfold_norm(v, moments[e], w_gamma, w_beta);
          store_output<kF32Out>(p, row0 + r, j, o, v, bias);
        }
      }
    }
  }
  cluster.sync_before_exit();  // this block's partials must outlive rank 0's reads
#endif
}

// ---- tensor-core kernel for many rows (rows_gemv_kernel) ----
//
// 9..64 rows in one block: NG groups of 8 (up to 8) multiply the same converted weight fragments, so every weight
// is read once for all rows. Differences from mma_gemv_kernel (which a sixth-session version ran for 9..64 rows
// with two groups a block and further rows on more blocks along grid y, a second wave at 32 rows):
// - the weights travel through a ring of kRingDepth chunks per lane in shared memory (cp.async, no registers):
//   the first kRingDepth chunks are requested before the wait for the previous kernel (all of a warp's share at
//   the usual splits), and each consumed chunk's slot is refilled with the chunk kRingDepth ahead. A lane reads
//   back only what it copied, so the ring needs no barrier;
// - the partial tiles are reduced by every thread of the cluster (each takes some of the fragments, the
//   epilogue too), first over the block's k-split warps, then over the cluster's ranks, in a fixed order.

// Chunks a lane keeps in flight: 32 bytes a chunk for fp16 and int8 (two rows of 16), 16 + 8 for int4.
template <WeightType T>
constexpr int kRingDepth = T == WeightType::kI4 ? 12 : 8;

// Bytes of one block's ring (every warp's), weights and int4 group scales.
template <WeightType T>
constexpr size_t ring_bytes() {
  const size_t per_lane_chunk = 2 * sizeof(typename Format<T>::Raw) + (T == WeightType::kI4 ? 2 * sizeof(float) : 0);
  return per_lane_chunk * kRingDepth<T> * kMmaThreads;
}

template <WeightType T, bool kF32Out, int NG>
__global__ void __launch_bounds__(kMmaThreads) rows_gemv_kernel(const GemvParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using Raw = typename Format<T>::Raw;
  constexpr int kElems = Format<T>::kElems, kC = kChunk<T>, kD = kRingDepth<T>;
  extern __shared__ __align__(16) unsigned char smem[];

  const ClusterRanks cluster;
  const int ranks = cluster.ranks, rank = cluster.rank;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int m = p.m;  // ≤ 8·NG: this block takes every row
  const int splits = kWarps / p.row_tiles;
  const int tile = warp % p.row_tiles, ksub = warp / p.row_tiles;
  const int tile0 = static_cast<int>(blockIdx.x) / ranks * p.row_tiles;

  // This block's chunks [cb0, cb1), and this warp's share [c0, c1).
  const int n_chunks = (p.k + kC - 1) / kC;
  const int cb0 = min(n_chunks, rank * p.chunks_per_rank), cb1 = min(n_chunks, cb0 + p.chunks_per_rank);
  const int per_warp = (cb1 - cb0 + splits - 1) / splits;
  const int c0 = min(cb1, cb0 + ksub * per_warp), c1 = min(cb1, c0 + per_warp);

  // Shared memory: the activations [m][stride] (halves), the partial tiles [kWarps][NG][32] (float4), the rings
  // [kWarps][kD][2 rows][32 lanes] (Raw), and for int4 the rows' group scales in the same layout (float).
  const int width = p.chunks_per_rank * kC, stride = width + kPad;
  auto* xs = reinterpret_cast<__half*>(smem);
  auto* partial = reinterpret_cast<float4*>(smem + sizeof(__half) * m * stride);
  auto* rings = reinterpret_cast<Raw*>(partial + kWarps * NG * 32);
  Raw* ring = rings + warp * kD * 64;
  float* ring_scales = reinterpret_cast<float*>(rings + kWarps * kD * 64) + warp * kD * 64;

  // Rows past n read row n − 1 (valid memory); their results are dropped.
  const int j0 = (tile0 + tile) * 16;
  const int64_t row_bytes = col_bytes<T>(p.k);
  const int ja = min(j0 + g, p.n - 1), jb = min(j0 + g + 8, p.n - 1);
  const char* wa = static_cast<const char*>(p.w) + ja * row_bytes;
  const char* wb = static_cast<const char*>(p.w) + jb * row_bytes;
  const int n_groups = p.k >> (p.group_shift + 6);

  // Chunk c0 + i of this lane's two rows into ring slot i % kD, as one commit group; nothing past the share, so
  // that every group holds a chunk. Columns past k are zero-filled.
  const auto fetch = [&](int i) {
    const int c = c0 + i;
    if (c < c1) {
      const int slot = i % kD, e = c * kC + t * kElems;
      const int valid = e < p.k ? static_cast<int>(sizeof(Raw)) : 0;
      const int64_t off = valid ? col_bytes<T>(e) : 0;
      copy_async_zfill<sizeof(Raw)>(ring + slot * 64 + lane, wa + off, valid);
      copy_async_zfill<sizeof(Raw)>(ring + slot * 64 + 32 + lane, wb + off, valid);
      if constexpr (T == WeightType::kI4) {
        const int grp = c >> p.group_shift;
        copy_async_zfill<4>(ring_scales + slot * 64 + lane, p.scales + static_cast<int64_t>(ja) * n_groups + grp, 4);
        copy_async_zfill<4>(ring_scales + slot * 64 + 32 + lane, p.scales + static_cast<int64_t>(jb) * n_groups + grp,
                            4);
      }
      commit_async();
    }
  };
  // The weights (constants) are requested before waiting for the kernels that write the activations.
#pragma unroll
  for (int i = 0; i < kD; ++i) fetch(i);
  wait_prior_kernels();
  allow_next_kernel();

  // Activations [m, k range of this block] → shared memory (zeros past k), in the order the lanes use.
  const int64_t k_base = static_cast<int64_t>(cb0) * kC;
  for (int i = threadIdx.x; i < m * (width / 8); i += kMmaThreads) {
    const int r = i / (width / 8), v = i % (width / 8);
    const int64_t e = k_base + 8 * v;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (e < p.k) val = *reinterpret_cast<const uint4*>(p.x + static_cast<int64_t>(r) * p.k + e);
    if constexpr (T == WeightType::kI4) val = interleave_i4(val);
    *reinterpret_cast<uint4*>(xs + r * stride + 8 * v) = val;
  }
  __syncthreads();

  float acc[NG][4] = {};
  bool has_x[NG];  // rows ≥ m multiply zeros (the pointer stays inside the array)
  const __half* x_lane[NG];
#pragma unroll
  for (int q = 0; q < NG; ++q) {
    const int r = q * kGemvMaxRows + g;
    has_x[q] = r < m;
    x_lane[q] = xs + min(r, m - 1) * stride + t * kElems;
  }
  for (int i = 0; i < c1 - c0; ++i) {
    // Chunk i's group: groups complete in order, and kD − 1 later ones are in flight while kD or more chunks
    // remain; nearer the end, all of them (already requested long before) are awaited at once.
    if (c1 - c0 - i >= kD) {
      wait_async<kD - 1>();
    } else {
      wait_async<0>();
    }
    const int slot = i % kD;
    const Raw a = ring[slot * 64 + lane], b = ring[slot * 64 + 32 + lane];
    float sa = 1.0f, sb = 1.0f;
    if constexpr (T == WeightType::kI4) {
      sa = ring_scales[slot * 64 + lane];
      sb = ring_scales[slot * 64 + 32 + lane];
    }
    const uint4* xv[NG];
#pragma unroll
    for (int q = 0; q < NG; ++q) xv[q] = reinterpret_cast<const uint4*>(x_lane[q] + (c0 + i - cb0) * kC);
    mma_chunk<T, NG>(acc, a, b, xv, has_x, sa, sb);
    fetch(i + kD);  // after the products that used the slot's registers
  }

  // Partial tiles → shared memory; the k-split warps of the block are summed first (split 0's slots end up
  // holding the block's sums), then the cluster's ranks.
#pragma unroll
  for (int q = 0; q < NG; ++q)
    partial[(warp * NG + q) * 32 + lane] = make_float4(acc[q][0], acc[q][1], acc[q][2], acc[q][3]);
  const int fragments = p.row_tiles * NG * 32;  // (tile, group, lane), the slot index of split 0
  if (splits > 1) {
    __syncthreads();
    for (int f = threadIdx.x; f < fragments; f += kMmaThreads) {
      float4 s = partial[f];
      for (int q = 1; q < splits; ++q) {
        const float4 v = partial[q * fragments + f];
        s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
      }
      partial[f] = s;
    }
  }
  cluster.sync();
  for (int f = rank * kMmaThreads + static_cast<int>(threadIdx.x); f < fragments; f += ranks * kMmaThreads) {
    float4 v[kMaxCluster];
#pragma unroll
    for (int r = 0; r < kMaxCluster; ++r) {
      if (r < ranks) v[r] = cluster.of(partial, r)[f];
    }
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < kMaxCluster; ++r) {
      if (r >= ranks) break;
      s[0] += v[r].x, s[1] += v[r].y, s[2] += v[r].z, s[3] += v[r].w;
    }
    // s: (row g, x row 8·grp + 2t), (row g, 8·grp + 2t + 1), (row g + 8, 8·grp + 2t), (row g + 8, 8·grp + 2t + 1)
    // of the fragment's lane.
    const int f_lane = f % 32, grp = (f / 32) % NG, f_tile = f / (32 * NG);
    const int fg = f_lane >> 2, ft = f_lane & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = (tile0 + f_tile) * 16 + fg + 8 * h;
      if (j >= p.n) continue;
      const float scale = T == WeightType::kI8 ? __ldg(p.scales + j) : 1.0f;
      const float bias = !kF32Out && p.bias ? __half2float(p.bias[j]) : 0.0f;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int r = grp * kGemvMaxRows + 2 * ft + e;
        if (r >= m) continue;
        const int64_t o = static_cast<int64_t>(r) * p.n + j;
        store_output<kF32Out>(p, r, j, o, s[2 * h + e] * scale, bias);
      }
    }
  }
  cluster.sync_before_exit();  // this block's partials must outlive the other ranks' reads
#endif
}

struct Plan {
  int row_tiles = 0, cluster = 0, chunks_per_rank = 0;
  int64_t blocks = 0;
  size_t smem = 0;
};

// The split: at least ~3 blocks per SM (so every SM keeps enough loads in flight), preferring more row tiles
// per block (fewer copies of the activations) and then smaller clusters; every k-split warp keeps ≥ 2
// chunks. Otherwise the split with the most blocks. row_tiles == 0: nothing fits in shared memory. m: the rows of
// one block; fixed_smem: the block's shared memory besides the activations.
Plan make_plan(int64_t m, size_t fixed_smem, int64_t n, int64_t k, int chunk, const DeviceInfo& info) {
  const int64_t n_chunks = (k + chunk - 1) / chunk, target = 3 * static_cast<int64_t>(info.sms);
  const int max_cluster = info.major >= 9 ? kMaxCluster : 1;
  Plan best;
  for (int tiles : {4, 2, 1}) {
    for (int cluster = 1; cluster <= max_cluster; cluster *= 2) {
      const int64_t per_rank = (n_chunks + cluster - 1) / cluster;
      if (cluster > 1 && per_rank < 2 * (kWarps / tiles)) break;
      const size_t smem = sizeof(__half) * static_cast<size_t>(m * (per_rank * chunk + kPad)) + fixed_smem;
      if (smem > static_cast<size_t>(info.smem_optin)) continue;
      const int64_t blocks = (n + 16 * tiles - 1) / (16 * tiles) * cluster;
      if (blocks > best.blocks) best = Plan{tiles, cluster, static_cast<int>(per_rank), blocks, smem};
      if (blocks >= target) return best;
    }
  }
  return best;
}

template <WeightType T, bool kF32Out, bool kNorm>
Status launch_mma_groups(GemvParams p, const DeviceInfo& info, cudaStream_t stream) {
  constexpr int NG = 1;
  constexpr int64_t kRows = NG * kGemvMaxRows;
  const int64_t rows = std::min<int64_t>(p.m, kRows), blocks_y = (p.m + kRows - 1) / kRows;
  const size_t fixed = sizeof(float4) * kMmaThreads * NG + sizeof(float2) * kWarps * kGemvMaxRows;
  const Plan plan = make_plan(rows, fixed, p.n, p.k, kChunk<T>, info);
  if (plan.row_tiles == 0) return Status::kNotSupported;
  if (!prepare_kernel<mma_gemv_kernel<T, kF32Out, kNorm>>(info)) {
    cudaGetLastError();
    return Status::kCudaError;
  }
  p.row_tiles = plan.row_tiles;
  p.chunks_per_rank = plan.chunks_per_rank;
  return launch_chained(mma_gemv_kernel<T, kF32Out, kNorm>,
                        dim3(static_cast<unsigned>(plan.blocks), static_cast<unsigned>(blocks_y)), dim3(kMmaThreads),
                        plan.smem, stream, static_cast<unsigned>(plan.cluster), p);
}

// The split for rows_gemv_kernel. Every block stages its k range of all m rows, so the activations read from L2
// are the weights' bytes × m / (16 · row tiles): many rows want many row tiles a block. So the most row tiles
// whose largest cluster (≤ 8, every warp keeping ≥ 2 chunks) still makes at least one block per SM, with
// the cluster no larger than what keeps every block resident at once (a second wave would start its weight
// loads only after the first has left).
template <auto Kernel>
Plan make_rows_plan(int64_t m, size_t fixed_smem, int64_t n, int64_t k, int chunk, const DeviceInfo& info) {
  const int64_t n_chunks = (k + chunk - 1) / chunk;
  const int max_cluster = info.major >= 9 ? kMaxCluster : 1;
  Plan best;
  for (int tiles : {4, 2, 1}) {
    for (int cluster = max_cluster; cluster >= 1; cluster /= 2) {
      const int64_t per_rank = (n_chunks + cluster - 1) / cluster;
      if (cluster > 1 && per_rank < 2 * (kWarps / tiles)) continue;
      const size_t smem = sizeof(__half) * static_cast<size_t>(m * (per_rank * chunk + kPad)) + fixed_smem;
      if (smem > static_cast<size_t>(info.smem_optin)) continue;
      const int per_sm = resident_blocks<Kernel, kMmaThreads>(smem);
      const int64_t blocks = (n + 16 * tiles - 1) / (16 * tiles) * cluster;
      if (blocks > static_cast<int64_t>(per_sm) * info.sms && cluster > 1) continue;
      if (blocks > best.blocks) best = Plan{tiles, cluster, static_cast<int>(per_rank), blocks, smem};
      break;  // the largest cluster that fits decides this tile count
    }
    if (best.blocks >= info.sms) return best;
  }
  return best;
}

// All m ≤ 8·NG rows in one block of rows_gemv_kernel.
template <WeightType T, bool kF32Out, int NG>
Status launch_rows_groups(GemvParams p, const DeviceInfo& info, cudaStream_t stream) {
  constexpr auto kernel = rows_gemv_kernel<T, kF32Out, NG>;
  if (!prepare_kernel<kernel>(info)) {
    cudaGetLastError();
    return Status::kCudaError;
  }
  const size_t fixed = sizeof(float4) * kMmaThreads * NG + ring_bytes<T>();
  const Plan plan = make_rows_plan<kernel>(p.m, fixed, p.n, p.k, kChunk<T>, info);
  if (plan.row_tiles == 0) return Status::kNotSupported;
  p.row_tiles = plan.row_tiles;
  p.chunks_per_rank = plan.chunks_per_rank;
  return launch_chained(kernel, dim3(static_cast<unsigned>(plan.blocks)), dim3(kMmaThreads), plan.smem, stream,
                        static_cast<unsigned>(plan.cluster), p);
}

// Up to 8 rows: mma_gemv_kernel's one group; more: rows_gemv_kernel with 2, 4 or 8 groups a block (large-v2 on an
// H200, 32 rows: QKV 16.0 → 8.4 µs, fc2 22.8 → 11.2 µs against two groups a block and a second block along grid y;
// docs/cuda.md). The folded norm keeps mma_gemv_kernel's one group a block.
template <WeightType T, bool kF32Out, bool kNorm>
Status launch_mma(const GemvParams& p, cudaStream_t stream) {
  DeviceInfo info;
  if (!device_info(info)) return Status::kCudaError;
  if (info.major < 8) return Status::kNotSupported;
  if constexpr (!kNorm) {
    if (p.m > kGemvMaxRows) {
      const Status s = gemv_detail::launch_wgmma_rows(p, T, kF32Out, info, stream);
      if (s != Status::kNotSupported) return s;
      if (p.m <= 2 * kGemvMaxRows) return launch_rows_groups<T, kF32Out, 2>(p, info, stream);
      if (p.m <= 4 * kGemvMaxRows) return launch_rows_groups<T, kF32Out, 4>(p, info, stream);
      return launch_rows_groups<T, kF32Out, 8>(p, info, stream);
    }
  }
  return launch_mma_groups<T, kF32Out, kNorm>(p, info, stream);
}

// ---- CUDA-core kernel --------------------------------------------------------------------------------

constexpr int kSimtThreads = 256;
constexpr int kMinLanes = 4, kMaxLanes = kSimtThreads;

// Columns per 16-byte weight vector.
template <WeightType T>
constexpr int kElems = T == WeightType::kF16  ? 8
                       : T == WeightType::kI8 ? 16
                                              : 32;

// Rows per thread (J): each activation vector loaded and converted serves J rows, which keeps L1 and the
// conversions off the critical path (at J = 4, 8 FMAs per 4-byte activation read). The quantised types keep
// J = 2 within 128 registers (two blocks per SM) without spilling: their conversions, and int4's per-vector
// partial sums, take more registers.
template <WeightType T, int M>
constexpr int kRowsPerThread = M >= 4 && T == WeightType::kF16 ? 4 : 2;
// Vectors per row in flight (U): 8 loads (128 bytes) per thread; 4 for the quantised types beyond M = 2, whose
// 16 bytes hold 16 or 32 columns of work (registers again).
template <WeightType T, int M>
constexpr int kUnroll = (T != WeightType::kF16 && M > 2 ? 4 : 8) / kRowsPerThread<T, M>;
// Resident blocks per SM the registers are capped for (the most that fit without spilling): 1024 threads at
// M = 1, 768 at M = 2, 512 beyond and for int4 (its partial sums).
template <WeightType T, int M>
constexpr int kSimtMinBlocks = T == WeightType::kI4 || M > 2 ? 2
                               : M == 1                      ? 4
                                                             : 3;
// Rounds after the first whose weights a thread copies into shared memory before the wait (32 KB a block for
// fp16): one at m = 1, where fc1 and fc2 need 5 vectors a thread against 4 in registers (large-v2 batch-1 step
// on an H200: 1.253 → 1.220 ms; two rounds 1.221); none from m = 2 on, where it measured slower (batch 2
// 1.446 → 1.477 ms, batch 5 2.011 → 2.028) and quantised weights, unchanged (docs/cuda.md).
template <int M>
constexpr int kTailRounds = M == 1 ? 1 : 0;
// The kernel runs for m ≤ kSimtMaxRows (dispatch()).
constexpr int kSimtMaxRows = 5;

// Columns 8c .. 8c + 7 of a weight vector as exact fp32 values (the unscaled codes for int8 and int4).
template <WeightType T>
__device__ __forceinline__ void weights8(const uint4& raw, int c, float (&f)[8]) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (T == WeightType::kF16) {
    unpack8(raw, f);
  } else if constexpr (T == WeightType::kI8) {
    // With the sign bit flipped a byte is q + 128; under the exponent of 2^23 it is the float 2^23 + q + 128.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t u = words[2 * c + h] ^ 0x80808080u;
#pragma unroll
      for (int b = 0; b < 4; ++b) f[4 * h + b] = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7540 + b)) - 8388736.0f;
    }
  } else {
    uint32_t pairs[4];
    i4_to_h2(words[c], pairs);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 q = __half22float2(*reinterpret_cast<const __half2*>(&pairs[i]));
      f[i] = q.x;
      f[i + 4] = q.y;
    }
  }
}

// sum[j][r] += Σ over one vector's columns of W[j]·x[r]; x points at row 0, the vector's first column (read-only
// path). kNorm (the folded row norm): the products take (x − x0[r])·γ (gamma points at the vector's first
// column), and stats[r] sums x − x0[r] and its square.
template <WeightType T, int M, int J, bool kNorm>
__device__ __forceinline__ void dot_vector(const uint4 (&raw)[J], const __half* x, int k, const float* gamma,
                                           const float (&x0)[M], float (&sum)[J][M], float2 (&stats)[M]) {
#pragma unroll
  for (int c = 0; c < kElems<T> / 8; ++c) {
    float w[J][8];
#pragma unroll
    for (int j = 0; j < J; ++j) weights8<T>(raw[j], c, w[j]);
    float g[8];
    if constexpr (kNorm) {
      const float4 g0 = __ldg(reinterpret_cast<const float4*>(gamma + 8 * c));
      const float4 g1 = __ldg(reinterpret_cast<const float4*>(gamma + 8 * c + 4));
      g[0] = g0.x, g[1] = g0.y, g[2] = g0.z, g[3] = g0.w, g[4] = g1.x, g[5] = g1.y, g[6] = g1.z, g[7] = g1.w;
    }
#pragma unroll
    for (int r = 0; r < M; ++r) {
      float xf[8];
      unpack8(__ldg(reinterpret_cast<const uint4*>(x + r * k + 8 * c)), xf);
      if constexpr (kNorm) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float dv = xf[e] - x0[r];
          stats[r].x += dv;
          stats[r].y = fmaf(dv, dv, stats[r].y);
          xf[e] = dv * g[e];
        }
      }
#pragma unroll
      for (int j = 0; j < J; ++j) {
#pragma unroll
        for (int e = 0; e < 8; ++e) sum[j][r] = fmaf(w[j][e], xf[e], sum[j][r]);
      }
    }
  }
}

template <WeightType T, int M, bool kF32Out, bool kNorm>
__global__ void __launch_bounds__(kSimtThreads, kSimtMinBlocks<T, M>) simt_gemv_kernel(const GemvParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int J = kRowsPerThread<T, M>, U = kUnroll<T, M>, kE = kElems<T>;
  // Team totals per shuffle segment (≥ kMinLanes threads): the J·M products, then (kNorm) each row's two sums.
  constexpr int kSums = (J + (kNorm ? 2 : 0)) * M;
  __shared__ float partial[kSimtThreads / kMinLanes * kSums];

  const int lanes = p.lanes, t = threadIdx.x & (lanes - 1), team = threadIdx.x / lanes;
  const int j0 = (static_cast<int>(blockIdx.x) * (kSimtThreads / lanes) + team) * J;
  const int vec_shift = p.group_shift + 1;  // kI4: vectors per scale group, log2
  const int n_groups = p.vecs >> vec_shift;
  // Rows past n read row n − 1 (valid memory); their results are dropped.
  const char* wrow[J];
  const float* srow[J];
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const int row = min(j0 + j, p.n - 1);
    wrow[j] = static_cast<const char*>(p.w) + static_cast<int64_t>(row) * p.vecs * 16;
    srow[j] = p.scales + static_cast<int64_t>(row) * n_groups;
  }

  // U vectors of each of the J rows from vector v0 on, all in flight before any is used.
  uint4 raw[U][J];
  float scale[U][J];
  auto load = [&](int v0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = v0 + u * lanes;
      if (v < p.vecs) {
#pragma unroll
        for (int j = 0; j < J; ++j) {
          ld_stream(raw[u][j], wrow[j] + 16 * static_cast<int64_t>(v));
          if constexpr (T == WeightType::kI4) scale[u][j] = __ldg(srow[j] + (v >> vec_shift));
        }
      }
    }
  };
  // The first weights (constants) are requested before waiting for the kernels that write the activations,
  // so their latency overlaps the end of those kernels: round 0 into registers, the next tail_rounds into
  // shared memory (cp.async, no registers), so that a weight a little larger than one round of registers
  // (fc1 and fc2 at batch 1: 5 vectors a thread against 4) does not wait a whole memory latency for its rest
  // after the wait.
  load(t);
  extern __shared__ uint4 tail[];  // [tail_rounds][U][J][kSimtThreads]
  auto tail_slot = [&](int round, int u, int j) {
    return tail + (((round - 1) * U + u) * J + j) * kSimtThreads + threadIdx.x;
  };
  for (int round = 1; round <= p.tail_rounds; ++round) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = t + (round * U + u) * lanes;
      if (v >= p.vecs) continue;
#pragma unroll
      for (int j = 0; j < J; ++j) copy16_async(tail_slot(round, u, j), wrow[j] + 16 * static_cast<int64_t>(v));
    }
  }
  asm volatile("cp.async.commit_group;\n" ::: "memory");

  // The epilogue's constants for this thread's first output (e = t below), also before the wait.
  const int jt = min(j0 + t / M, p.n - 1), rt = t % M;
  const bool early = t < J * M;
  float scale_t = 1.0f, bias_t = 0.0f, residual_t = 0.0f, w_gamma_t = 0.0f, w_beta_t = 0.0f;
  if (early) {
    if constexpr (T == WeightType::kI8) scale_t = __ldg(p.scales + jt);
    if (!kF32Out && p.bias) bias_t = __half2float(p.bias[jt]);
    if constexpr (kNorm) w_gamma_t = __ldg(p.ln_w_gamma + jt), w_beta_t = __ldg(p.ln_w_beta + jt);
  }
  wait_prior_kernels();
  allow_next_kernel();
  // y may alias the residual, but each output is read and written by one thread.
  if (early && !kF32Out && p.residual) residual_t = __half2float(p.residual[static_cast<int64_t>(rt) * p.n + jt]);

  // The folded norm's shift: each row's first column.
  float x0[M];
#pragma unroll
  for (int r = 0; r < M; ++r) x0[r] = kNorm ? __half2float(p.x[static_cast<int64_t>(r) * p.k]) : 0.0f;
  float2 stats[M] = {};

  float acc[J][M] = {};
  int round = 0;
  for (int v0 = t; v0 < p.vecs; v0 += lanes * U, ++round) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = v0 + u * lanes;
      if (v >= p.vecs) continue;
      const __half* x = p.x + static_cast<int64_t>(v) * kE;
      const float* gamma = kNorm ? p.ln_gamma + static_cast<int64_t>(v) * kE : nullptr;
      if constexpr (T == WeightType::kI4) {
        float part[J][M] = {};
        dot_vector<T, M, J, kNorm>(raw[u], x, p.k, gamma, x0, part, stats);
#pragma unroll
        for (int j = 0; j < J; ++j) {
#pragma unroll
          for (int r = 0; r < M; ++r) acc[j][r] = fmaf(scale[u][j], part[j][r], acc[j][r]);
        }
      } else {
        dot_vector<T, M, J, kNorm>(raw[u], x, p.k, gamma, x0, acc, stats);
      }
    }
    const int next = v0 + lanes * U;
    if (next >= p.vecs) continue;
    if (round < p.tail_rounds) {
      if (round == 0) asm volatile("cp.async.wait_all;\n" ::: "memory");  // this thread's own copies
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int v = next + u * lanes;
        if (v >= p.vecs) continue;
#pragma unroll
        for (int j = 0; j < J; ++j) {
          raw[u][j] = *tail_slot(round + 1, u, j);
          if constexpr (T == WeightType::kI4) scale[u][j] = __ldg(srow[j] + (v >> vec_shift));
        }
      }
    } else {
      load(next);
    }
  }

  // Team sum: shuffles within a segment of ≤ 32 threads, then the segments' totals through shared memory.
  const int seg = min(lanes, 32);
  for (int o = seg / 2; o > 0; o >>= 1) {
#pragma unroll
    for (int j = 0; j < J; ++j) {
#pragma unroll
      for (int r = 0; r < M; ++r) acc[j][r] += __shfl_xor_sync(0xffffffffu, acc[j][r], o);
    }
    if constexpr (kNorm) {
#pragma unroll
      for (int r = 0; r < M; ++r) {
        stats[r].x += __shfl_xor_sync(0xffffffffu, stats[r].x, o);
        stats[r].y += __shfl_xor_sync(0xffffffffu, stats[r].y, o);
      }
    }
  }
  const int s = threadIdx.x / seg, sl = threadIdx.x & (seg - 1);
#pragma unroll
  for (int j = 0; j < J; ++j) {
#pragma unroll
    for (int r = 0; r < M; ++r) {
      if (((j * M + r) & (seg - 1)) == sl) partial[s * kSums + j * M + r] = acc[j][r];
    }
  }
  if constexpr (kNorm) {
#pragma unroll
    for (int r = 0; r < M; ++r) {
      if (((J * M + 2 * r) & (seg - 1)) == sl) partial[s * kSums + J * M + 2 * r] = stats[r].x;
      if (((J * M + 2 * r + 1) & (seg - 1)) == sl) partial[s * kSums + J * M + 2 * r + 1] = stats[r].y;
    }
  }
  __syncthreads();
  const int parts = lanes / seg;
  const float* team_sums = partial + team * parts * kSums;
  for (int e = t; e < J * M; e += lanes) {
    float v = 0.0f;
    for (int q = 0; q < parts; ++q) v += team_sums[q * kSums + e];
    const int j = j0 + e / M, r = e % M;
    if (j >= p.n) continue;
    const bool first = e == t;
    const int64_t o = static_cast<int64_t>(r) * p.n + j;
    if constexpr (T == WeightType::kI8) v *= first ? scale_t : __ldg(p.scales + j);
    if constexpr (kNorm) {
      float s1 = 0.0f, s2 = 0.0f;
      for (int q = 0; q < parts; ++q)
        s1 += team_sums[q * kSums + J * M + 2 * r], s2 += team_sums[q * kSums + J * M + 2 * r + 1];
      const float2 m = row_moments(s1, s2, p.k, p.ln_eps);
      v = unfold_norm(v, m, first ? w_gamma_t : __ldg(p.ln_w_gamma + j), first ? w_beta_t : __ldg(p.ln_w_beta + j));
    }
    if constexpr (kF32Out) {
      p.y32[o] = v;
    } else {
      if (p.bias) v += first ? bias_t : __half2float(p.bias[j]);
      if (p.gelu) v = gelu_erf(v);
      if (p.residual) v += first ? residual_t : __half2float(p.residual[o]);
      const __half h = __float2half_rn(v);
      p.y[o] = h;
      append_kv(p, r, j, h);
    }
  }
#endif
}

// The team size: the smallest L that fills every SM with as many threads as can be resident (a single wave
// at full memory-level parallelism), no wider than a row has vectors.
template <WeightType T, int M, bool kF32Out, bool kNorm>
Status launch_simt(GemvParams p, int sms, cudaStream_t stream) {
  constexpr int J = kRowsPerThread<T, M>;
  const int64_t teams = (p.n + J - 1) / J,
                target = int64_t{kSimtMinBlocks<T, M>} * kSimtThreads * sms * gemv_fill() / 100;
  int lanes = kMinLanes;
  while (lanes < kMaxLanes && lanes < p.vecs && teams * lanes < target) lanes *= 2;
  p.lanes = lanes;
  const int64_t rows_per_block = static_cast<int64_t>(kSimtThreads / lanes) * J;
  const auto blocks = static_cast<unsigned>((p.n + rows_per_block - 1) / rows_per_block);
  constexpr int U = kUnroll<T, M>;
  const int rounds = (p.vecs + lanes * U - 1) / (lanes * U);
  p.tail_rounds = std::min(kTailRounds<M>, rounds - 1);
  const size_t smem = sizeof(uint4) * static_cast<size_t>(p.tail_rounds) * U * J * kSimtThreads;
  return launch_chained(simt_gemv_kernel<T, M, kF32Out, kNorm>, dim3(blocks), dim3(kSimtThreads), smem, stream, 1u, p);
}

template <WeightType T, bool kF32Out, bool kNorm>
Status launch_rows(const GemvParams& p, int sms, cudaStream_t stream) {
  switch (p.m) {
    case 1:
      return launch_simt<T, 1, kF32Out, kNorm>(p, sms, stream);
    case 2:
      return launch_simt<T, 2, kF32Out, kNorm>(p, sms, stream);
    case 3:
      return launch_simt<T, 3, kF32Out, kNorm>(p, sms, stream);
    case 4:
      return launch_simt<T, 4, kF32Out, kNorm>(p, sms, stream);
    case 5:
      return launch_simt<T, 5, kF32Out, kNorm>(p, sms, stream);
  }
  static_assert(kSimtMaxRows == 5);
  return Status::kInvalidArgument;
}

// Host-side checks of a weight view; kOk, kInvalidArgument or kNotSupported.
Status check_weight(const WeightView& w, int64_t n, int64_t k) {
  if (n <= 0 || k <= 0 || n >= INT_MAX / 2 || k >= INT_MAX / 2 || !w.data || !aligned16(w.data)) {
    return Status::kInvalidArgument;
  }
  switch (w.type) {
    case WeightType::kF16:
      return k % 8 == 0 ? Status::kOk : Status::kNotSupported;
    case WeightType::kI8:
      if (!w.scales) return Status::kInvalidArgument;
      return k % 16 == 0 ? Status::kOk : Status::kNotSupported;
    case WeightType::kI4:
      if (!w.scales || w.group <= 0 || k % w.group != 0) return Status::kInvalidArgument;
      return w.group == 64 || w.group == 128 ? Status::kOk : Status::kNotSupported;
  }
  return Status::kInvalidArgument;
}

// The kernel per shape, from CUDA-graph timings on an H200 (bench/kernels/cuda_kernels_bench.cpp, large-v2
// shapes): the CUDA-core kernel is faster at m ≤ 2 on every layer shape, and on the narrow layers (n ≤ 2048:
// attention out, fc2) up to m = 5; the tensor-core kernel wherever the FMAs of more rows bound the CUDA
// cores, and on the logits (n = 51865), whose long streams it reads at ~3.8 TB/s.
template <bool kF32Out, bool kNorm>
Status dispatch_kernel(const GemvParams& p, WeightType type, cudaStream_t stream) {
  const bool simt = p.m <= 2 ? p.n < 16384 : p.m <= kSimtMaxRows && p.n <= 2048;
  if (!simt) {
    switch (type) {
      case WeightType::kF16:
        return launch_mma<WeightType::kF16, kF32Out, kNorm>(p, stream);
      case WeightType::kI8:
        return launch_mma<WeightType::kI8, kF32Out, kNorm>(p, stream);
      case WeightType::kI4:
        return launch_mma<WeightType::kI4, kF32Out, kNorm>(p, stream);
    }
    return Status::kInvalidArgument;
  }
  DeviceInfo info;
  if (!device_info(info)) return Status::kCudaError;
  if (info.major < 8) return Status::kNotSupported;  // kept as documented in gemv.h (and the L2::256B hint)
  switch (type) {
    case WeightType::kF16:
      return launch_rows<WeightType::kF16, kF32Out, kNorm>(p, info.sms, stream);
    case WeightType::kI8:
      return launch_rows<WeightType::kI8, kF32Out, kNorm>(p, info.sms, stream);
    case WeightType::kI4:
      return launch_rows<WeightType::kI4, kF32Out, kNorm>(p, info.sms, stream);
  }
  return Status::kInvalidArgument;
}

template <bool kF32Out>
Status dispatch(const GemvParams& p, WeightType type, cudaStream_t stream) {
  return p.ln_gamma ? dispatch_kernel<kF32Out, true>(p, type, stream)
                    : dispatch_kernel<kF32Out, false>(p, type, stream);
}

// The weight's parameters (a weight check_weight() accepted).
void set_weight(const WeightView& w, int64_t n, int64_t k, GemvParams& p) {
  p.w = w.data;
  p.scales = w.scales;
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.vecs = static_cast<int>(w.type == WeightType::kF16 ? k / 8 : w.type == WeightType::kI8 ? k / 16 : k / 32);
  p.group_shift = w.type == WeightType::kI4 && w.group == 128 ? 1 : 0;
}

Status make_params(const __half* x, const WeightView& w, int64_t m, int64_t n, int64_t k, const RowNorm& norm,
                   GemvParams& p) {
  if (m < 1 || m > kGemvMaxGroupedRows || !x || !aligned16(x)) return Status::kInvalidArgument;
  const Status s = check_weight(w, n, k);
  if (s != Status::kOk) return s;
  if (norm.gamma && (!norm.w_gamma || !norm.w_beta || !(norm.eps > 0.0f) || !aligned16(norm.gamma))) {
    return Status::kInvalidArgument;
  }
  p = GemvParams{};
  p.ln_gamma = norm.gamma;
  p.ln_w_gamma = norm.w_gamma;
  p.ln_w_beta = norm.w_beta;
  p.ln_eps = norm.eps;
  p.x = x;
  p.m = static_cast<int>(m);
  set_weight(w, n, k, p);
  return Status::kOk;
}

// ---- dequantisation -------------------------------------------------------------------------------------

// out[j, 8i .. 8i + 7] for i over the row's 8-column blocks (k % 16 == 0 for int8, % 64 for int4).
template <WeightType T>
__global__ void dequantize_kernel(const void* __restrict__ data, const float* __restrict__ scales,
                                  __half* __restrict__ out, int64_t k, int64_t n_vec, int group) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_vec; i += step) {
    const int64_t e = 8 * i, j = e / k, col = e - j * k;
    float f[8];
    if constexpr (T == WeightType::kI8) {
      const uint2 q = reinterpret_cast<const uint2*>(data)[i];
      const float s = scales[j];
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        const auto v = static_cast<int8_t>(((b < 4 ? q.x : q.y) >> (8 * (b & 3))) & 0xffu);
        f[b] = __fmul_rn(static_cast<float>(v), s);
      }
    } else {
      const uint32_t q = reinterpret_cast<const uint32_t*>(data)[i];
      const float s = scales[j * (k / group) + col / group];
#pragma unroll
      for (int b = 0; b < 8; ++b) f[b] = __fmul_rn(static_cast<float>(static_cast<int>((q >> (4 * b)) & 0xfu) - 8), s);
    }
    reinterpret_cast<uint4*>(out)[i] = pack8(f);
  }
}

// w_gamma[j], w_beta[j] (fold_norm): one warp per weight row, fp64 sums of the exactly dequantised weights.
template <WeightType T>
__global__ void fold_norm_kernel(const GemvParams p, const float* __restrict__ gamma, const float* __restrict__ beta,
                                 float* __restrict__ w_gamma, float* __restrict__ w_beta) {
  constexpr int kE = kElems<T>, kWarpsPerBlock = 8;
  const int j = static_cast<int>(blockIdx.x) * kWarpsPerBlock + static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (j >= p.n) return;
  const int vec_shift = p.group_shift + 1, n_groups = p.vecs >> vec_shift;
  const auto* row =
      reinterpret_cast<const uint4*>(static_cast<const char*>(p.w) + static_cast<int64_t>(j) * p.vecs * 16);
  double a = 0.0, b = 0.0;
  for (int v = lane; v < p.vecs; v += 32) {
    const uint4 raw = row[v];
    const double s = T == WeightType::kI8   ? p.scales[j]
                     : T == WeightType::kI4 ? p.scales[static_cast<int64_t>(j) * n_groups + (v >> vec_shift)]
                                            : 1.0;
#pragma unroll
    for (int c = 0; c < kE / 8; ++c) {
      float f[8];
      weights8<T>(raw, c, f);
      const int i0 = v * kE + 8 * c;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const double w = static_cast<double>(f[e]) * s;
        a += w * gamma[i0 + e];
        b += w * beta[i0 + e];
      }
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  if (lane == 0) {
    w_gamma[j] = static_cast<float>(a);
    w_beta[j] = static_cast<float>(b);
  }
}

}  // namespace

int64_t weight_bytes(WeightType type, int64_t n, int64_t k, int group) {
  switch (type) {
    case WeightType::kF16:
      return 2 * n * k;
    case WeightType::kI8:
      return n * k + 4 * n;
    case WeightType::kI4:
      return n * k / 2 + (group > 0 ? 4 * n * (k / group) : 0);
  }
  return 0;
}

namespace {
std::atomic<int> g_gemv_fill{kDefaultGemvFill};
}  // namespace

void set_gemv_fill(int percent) { g_gemv_fill.store(std::clamp(percent, 1, 100), std::memory_order_relaxed); }
int gemv_fill() { return g_gemv_fill.load(std::memory_order_relaxed); }
std::atomic<int> g_gemv_wgmma{kDefaultGemvWgmmaCluster};
void set_gemv_wgmma(int max_cluster) { g_gemv_wgmma.store(std::clamp(max_cluster, 0, 8), std::memory_order_relaxed); }
int gemv_wgmma() { return g_gemv_wgmma.load(std::memory_order_relaxed); }
// Asked by GpuWhisper for every linear layer of every pass it builds: no device queries beyond the cached one.
bool gemv_half_rows_on_wgmma() { return gemv_wgmma() > 0 && detail::device_compute_capability() == 90; }

Status gemv(const __half* x, const WeightView& w, const __half* bias, const __half* residual, __half* y, int64_t m,
            int64_t n, int64_t k, bool gelu, cudaStream_t stream, const RowNorm& norm, const KvAppend* append) {
  GemvParams p;
  const Status s = make_params(x, w, m, n, k, norm, p);
  if (s != Status::kOk) return s;
  if (!y || y == x) return Status::kInvalidArgument;
  if (append) {
    const KvView& c = append->cache;
    if (c.type == KvType::kI8Dynamic) return Status::kNotSupported;
    if (!c.data || !append->row || append->n_rows <= 0 || append->n_rows > INT32_MAX || append->col0 < 0 ||
        append->width <= 0 || append->width % 64 != 0 || append->col0 + append->width > n || c.ld < append->width ||
        c.batch_stride < 0 || (c.type != KvType::kF16 && !c.scales)) {
      return Status::kInvalidArgument;
    }
    p.kv = static_cast<char*>(c.data);
    p.kv_type = c.type;
    p.kv_ld = c.ld;
    p.kv_batch_stride = c.batch_stride;
    p.kv_scales = c.scales;
    p.kv_row = append->row;
    p.kv_slot = c.slot;
    p.kv_rows = static_cast<int>(append->n_rows);
    p.kv_col0 = static_cast<int>(append->col0);
    p.kv_width = static_cast<int>(append->width);
  }
  p.bias = bias;
  p.residual = residual;
  p.y = y;
  p.gelu = gelu;
  return dispatch<false>(p, w.type, stream);
}

Status gemv_f32_out(const __half* x, const WeightView& w, float* y, int64_t m, int64_t n, int64_t k,
                    cudaStream_t stream, const RowNorm& norm) {
  GemvParams p;
  const Status s = make_params(x, w, m, n, k, norm, p);
  if (s != Status::kOk) return s;
  if (!y) return Status::kInvalidArgument;
  p.y32 = y;
  return dispatch<true>(p, w.type, stream);
}

Status dequantize_weight(const WeightView& w, __half* out, int64_t n, int64_t k, cudaStream_t stream) {
  const Status s = check_weight(w, n, k);
  if (s != Status::kOk) return s;
  if (!out || !aligned16(out)) return Status::kInvalidArgument;
  const int64_t n_vec = n * k / 8;
  const unsigned blocks = grid_for(n_vec, 256);
  switch (w.type) {
    case WeightType::kF16:
      return cudaMemcpyAsync(out, w.data, sizeof(__half) * n * k, cudaMemcpyDeviceToDevice, stream) == cudaSuccess
                 ? Status::kOk
                 : Status::kCudaError;
    case WeightType::kI8:
      dequantize_kernel<WeightType::kI8><<<blocks, 256, 0, stream>>>(w.data, w.scales, out, k, n_vec, 0);
      break;
    case WeightType::kI4:
      dequantize_kernel<WeightType::kI4><<<blocks, 256, 0, stream>>>(w.data, w.scales, out, k, n_vec, w.group);
      break;
  }
  return launch_status();
}

Status fold_norm(const WeightView& w, const float* gamma, const float* beta, float* w_gamma, float* w_beta, int64_t n,
                 int64_t k, cudaStream_t stream) {
  const Status s = check_weight(w, n, k);
  if (s != Status::kOk) return s;
  if (!gamma || !beta || !w_gamma || !w_beta) return Status::kInvalidArgument;
  GemvParams p{};
  set_weight(w, n, k, p);
  constexpr int kWarpsPerBlock = 8;
  const auto blocks = static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock);
  switch (w.type) {
    case WeightType::kF16:
      fold_norm_kernel<WeightType::kF16><<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(p, gamma, beta, w_gamma, w_beta);
      break;
    case WeightType::kI8:
      fold_norm_kernel<WeightType::kI8><<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(p, gamma, beta, w_gamma, w_beta);
      break;
    case WeightType::kI4:
      fold_norm_kernel<WeightType::kI4><<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(p, gamma, beta, w_gamma, w_beta);
      break;
  }
  return launch_status();
}

}  // namespace wisp::kernels::cuda
