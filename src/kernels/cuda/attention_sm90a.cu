// attention() for many queries on the Hopper tensor cores (wgmma, sm_90a): the kernel attention.cu takes on a
// compute-capability-9.0 device for more than 64 queries (the encoder's 1500 × 1500, long prompts). This file is
// compiled for sm_90a only (CMakeLists.txt); elsewhere the kernel is empty and never launched.
//
// Why. The mma.sync kernel (attention.cu) runs the encoder's attention at ~220 TFLOP/s on an H200: every warp
// loads its K and V fragments from shared memory with ldmatrix, one 16 × 8 tile per instruction. One wgmma
// m64nNk16 multiplies a warpgroup's 64 queries by N keys straight from shared memory.
//
// Layout. A block of two warpgroups owns 128 queries of one (sequence, head); each warpgroup owns 64 of them. Q,
// K and V tiles are rows of 64 fp16 (128 bytes) in the 128-byte swizzle (wgmma.cuh), so a row of K (one key)
// is a K-major row for S = Q·Kᵀ, and the same rows of V are the MN-major B operand of O += P·V (no transpose).
// Keys come in tiles of 64 through a ring of three stages: on the tensor copy engine (TMA: one thread issues a
// tile's two box copies, mbarriers say when a stage is full and when both warpgroups are done with it), or, for a
// K/V layout no tensor map describes (sequences sharing one K/V), with cp.async by every thread and a block barrier
// per tile. Per tile a warpgroup computes S [64 × 64] into registers, masks the keys past the end (or past the
// causal limit), updates the running row max and sum (online softmax, log2 units; the max moves lazily, see
// softmax), rescales O, and multiplies P·V with P converted to fp16 in registers: an accumulator's layout is that
// of wgmma's register A operand, so P never touches shared memory. The scores and softmax of tile i overlap the
// P·V of tile i − 1 (one warpgroup's pipeline), and two blocks share an SM.
//
// Measured (H200, cuda_kernels_bench; docs/cuda.md "Tenth session", "Fifteenth session"): the encoder's 20 heads of
// 1500 × 1500, 1 window / 8 windows: first form 38 / 273 us; with 32-bit copy offsets, the copies after the
// products and lazy rescaling 36.1 / 248; on TMA with mbarriers 32.8 / 228 us (352 / 405 TFLOP/s; mma.sync 52 /
// 388). The kernel is bound by instruction issue and the latency of each warpgroup's chain (Nsight Compute: ~270
// instructions per warp and tile, the exponentials, maxima, sums and fp16 packing of the online softmax 157 of
// them). Tried: 128-key tiles (one block an SM at 160 registers): 54 us.

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>

#include "kernels/cuda/attention_internal.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace wisp::kernels::cuda::attention_detail {
namespace {

using detail::commit_async;
using detail::copy_async_zfill;
using detail::exp2_ftz;
using detail::pack_half2;
using detail::wait_async;
using wgmma::desc_k_major;
using wgmma::desc_mn_major_64;
using wgmma::fence_operands;
using wgmma::fence_proxy_async;
using wgmma::kRowBytes;
using wgmma::swizzled;

constexpr int kWarpGroups = 2;
constexpr int kThreads = 128 * kWarpGroups;
constexpr int kBlockQ = 64 * kWarpGroups;
constexpr int kStages = 3;  // K/V tiles in shared memory: the one being scored, the one in P·V, the one loading

constexpr int kKV = 64;                   // keys a tile
constexpr float kLazyRescaleLog2 = 8.0f;  // how far (log2) a row's max may rise before O and the sums are rescaled
// Shared memory: the Q tile [128][128 B], then kStages stages of K [64][128 B] and V [64][128 B]; plus up to 1023
// bytes to reach the 1024-byte alignment the swizzle needs.
constexpr size_t kSmemBytes = 1024 + static_cast<size_t>(kBlockQ + kStages * 2 * kKV) * kRowBytes;

// v, computed here: the compiler may not move its computation past this point (among asynchronous products).
__device__ __forceinline__ uint64_t pinned(uint64_t v) {
  asm volatile("" : "+l"(v)::"memory");
  return v;
}

// mbarriers (shared::cta) and the tensor copy engine (TMA), for the kernel's kTma form.
__device__ __forceinline__ uint32_t shared_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_addr(bar)), "r"(count) : "memory");
}
// The initialised barriers, visible to the async proxy (the copy engine completes transactions on them).
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_addr(bar)) : "memory");
}
// One arrival that also expects `bytes` of copies to complete on the barrier.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_addr(bar)), "r"(bytes)
               : "memory");
}
// Until the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(shared_addr(bar)),
      "r"(parity)
      : "memory");
}
// The box at (c0, c1, c2) of a 3-D tensor map into shared memory (in the map's swizzle), completing on `bar`.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::
          "r"(shared_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(shared_addr(bar))
      : "memory");
}

// Rows [row0, row0 + kRows) of a [n_rows, ld] head (64 columns) into a swizzled tile; rows past n_rows are zeros.
template <int kRows>
__device__ __forceinline__ void load_tile(unsigned char* tile, const __half* g, int64_t ld, int row0, int n_rows) {
#pragma unroll
  for (int c = static_cast<int>(threadIdx.x); c < kRows * 8; c += kThreads) {
    const int r = c >> 3, chunk = c & 7;
    const bool valid = row0 + r < n_rows;
    copy_async_zfill<16>(tile + swizzled(r, chunk), g + static_cast<int64_t>(valid ? row0 + r : 0) * ld + chunk * 8,
                         valid ? 16 : 0);
  }
}

// A thread holds S (32 registers), the P of the tile before (16, read by its P·V in flight) and O (32): two blocks
// fit an SM at 128 registers a thread.
//
// kTma: the K/V tiles come through the tensor copy engine (k_map, v_map: launch_attention_sm90a) into a ring of
// kStages stages with a "full" and an "empty" mbarrier each: thread 0 issues a tile's two copies, the warpgroups
// wait for its full barrier, and every thread arrives on the empty barrier once its P·V of the tile has finished,
// after which thread 0 refills the stage. No block-wide barrier and no per-thread copy addresses in the loop.
// Otherwise (a K/V layout no tensor map describes) all threads copy with cp.async and meet at a barrier per tile.
template <bool kTma>
__global__ void __launch_bounds__(kThreads, 2)
    wgmma_attention_kernel(const FlashParams p, const __grid_constant__ CUtensorMap k_map,
                           const __grid_constant__ CUtensorMap v_map) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  const auto raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  unsigned char* sq = smem_raw + ((1024 - (raw_addr & 1023)) & 1023);
  unsigned char* skv = sq + kBlockQ * kRowBytes;  // stage s: K at s·kStageBytes, V kKV rows after it
  constexpr int kStageBytes = 2 * kKV * kRowBytes;
  const auto q_addr = static_cast<uint32_t>(__cvta_generic_to_shared(sq));
  const auto kv_addr = static_cast<uint32_t>(__cvta_generic_to_shared(skv));

  const int tid = static_cast<int>(threadIdx.x);
  const int wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int g = lane >> 2, t = lane & 3;  // accumulator coordinates: row group and thread-in-group
  const int q0 = static_cast<int>(blockIdx.x) * kBlockQ;
  const BlockHead head(p, q0, kBlockQ);
  const __half *q = head.q, *k = head.k, *v = head.v;
  __half* o = head.o;
  const int n_tiles = (head.kv_end + kKV - 1) / kKV;  // ≥ 1: n_kv ≥ 1, and a causal row sees key 0

  // This thread's share of a K or V tile: rows lr and lr + 32, 16-byte chunk lc (the same swizzle phase). Offsets
  // within a head are 32-bit (launch_attention_sm90a checks that n_kv rows fit), so a tile's addresses cost one
  // multiply and two wide adds; 64-bit products per copy had the loads' address math at a fifth of the loop's
  // instructions (Nsight Compute, docs/cuda.md "Fifteenth session").
  const int lr = tid >> 3, lc = tid & 7;
  const uint32_t ldst = swizzled(lr, lc);
  const int ldk = static_cast<int>(p.ldk), ldv = static_cast<int>(p.ldv);
  const __half* lk = k + lr * ldk + 8 * lc;
  const __half* lv = v + lr * ldv + 8 * lc;
  static_assert(kKV * 8 == 2 * kThreads, "two 16-byte chunks of K and of V a thread");
  // Tile i into the stage at byte offset `stage` (tiles i, i + 1, i + 2 take the three stages in turn).
  const auto load_kv = [&](int i, uint32_t stage_offset) {
    if (i >= n_tiles) return;
    unsigned char* stage = skv + stage_offset + ldst;
    const int row0 = i * kKV;
    const __half* tk = lk + row0 * ldk;
    const __half* tv = lv + row0 * ldv;
    if (row0 + kKV <= p.n_kv) {  // a whole tile (all but perhaps the last): no bounds per copy
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        copy_async_zfill<16>(stage + 32 * u * kRowBytes, tk + 32 * u * ldk, 16);
        copy_async_zfill<16>(stage + (kKV + 32 * u) * kRowBytes, tv + 32 * u * ldv, 16);
      }
      return;
    }
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      // Rows past n_kv become zeros (no NaN from stale memory reaches the products), read from nowhere.
      const bool valid = row0 + lr + 32 * u < p.n_kv;
      copy_async_zfill<16>(stage + 32 * u * kRowBytes, valid ? tk + 32 * u * ldk : k, valid ? 16 : 0);
      copy_async_zfill<16>(stage + (kKV + 32 * u) * kRowBytes, valid ? tv + 32 * u * ldv : v, valid ? 16 : 0);
    }
  };

  float acc[32];  // O [64 × 64] of this warpgroup: rows 16·warp + g (+ 8), columns 8·(i / 4) + 2t + i % 2
#pragma unroll
  for (int i = 0; i < 32; ++i) acc[i] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};  // rows g and g + 8: max (log2), this thread's sum
  const int row_g = q0 + 64 * wg + 16 * warp + g;
  const uint32_t q_wg = q_addr + 64 * wg * kRowBytes;

  // S = Q · K(i)ᵀ: 64 queries × kKV keys, issued (one commit group); accumulator e is row g + 8·((e / 2) % 2), key
  // 8·(e / 4) + 2t + e % 2. The caller issues wgmma::fence() before (and, where its operands were computed,
  // fence_operands(): between the fence and the last product of a group nothing may write a product's registers,
  // or ptxas serialises the products).
  float s[kKV / 2];
  const auto issue_scores = [&](const uint64_t(&kd)[kHeadDim / 16]) {
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      wgmma::Wgmma<kKV>::run(s, desc_k_major(q_wg + 32 * kk), kd[kk], kk > 0);
    }
    wgmma::commit();
  };
  // O += P · V(i), 16 keys a product, issued (one commit group; fences as for issue_scores); P's register fragments
  // are the score accumulators of two 8-key blocks, rounded to fp16.
  uint32_t pa[kKV / 16][4];
  const auto pin_pv_operands = [&] {
#pragma unroll
    for (int kc = 0; kc < kKV / 16; ++kc) fence_operands(pa[kc]);
    fence_operands(acc);
  };
  const auto issue_pv = [&](const uint64_t(&vd)[kKV / 16]) {
#pragma unroll
    for (int kc = 0; kc < kKV / 16; ++kc) wgmma::WgmmaRegA<64, 1>::run(acc, pa[kc], vd[kc]);
    wgmma::commit();
  };
  // The descriptors of tile i's K (per 16 dims) and V (per 16 keys), computed and pinned before the products.
  // (A descriptor's address field counts 16 bytes: + 2 is the next 16 dims of a K row, + 128 the next 16 V rows.)
  const auto k_descs = [&](uint32_t stage_offset, uint64_t(&kd)[kHeadDim / 16]) {
    const uint64_t d = desc_k_major(kv_addr + stage_offset);
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) kd[kk] = pinned(d + 2 * kk);
  };
  const auto v_descs = [&](uint32_t stage_offset, uint64_t(&vd)[kKV / 16]) {
    const uint64_t d = desc_mn_major_64(kv_addr + stage_offset + kKV * kRowBytes);
#pragma unroll
    for (int kc = 0; kc < kKV / 16; ++kc) vd[kc] = pinned(d + 16 * kc * kRowBytes / 16);
  };
  // Tile i's scores (s, done) → masked, online softmax: the new row max, alpha (the factor for what O and the sums
  // hold so far) and P, in place in s (fp32); a row's four threads (same g) share its max through two shuffles.
  const auto softmax = [&](int i, float(&alpha)[2]) {
    const int kv0 = i * kKV;
    if (kv0 + kKV > p.n_kv || p.causal) {
#pragma unroll
      for (int e = 0; e < kKV / 2; ++e) {
        const int key = kv0 + 8 * (e >> 2) + 2 * t + (e & 1);
        const int row = row_g + 8 * ((e >> 1) & 1);
        const int limit = p.causal ? min(p.n_kv, p.q_offset + row + 1) : p.n_kv;
        if (key >= limit) s[e] = -INFINITY;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < kKV / 8; ++c) mx = fmaxf(mx, fmaxf(s[4 * c + 2 * r], s[4 * c + 2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // Lazy rescaling: the running max moves only when this tile's exceeds it by more than kLazyRescaleLog2, so
      // P = 2^(s - m) stays below 2^kLazyRescaleLog2 (exact enough in fp16, which holds 65504; the fp32 sums and O
      // do not mind) and O is rescaled on a few tiles of a row instead of most.
      const float m_tile = mx * p.scale_log2;
      const float m_new = m_tile > m_run[r] + kLazyRescaleLog2 ? m_tile : m_run[r];
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with no visible key yet
      alpha[r] = exp2_ftz(m_run[r] - m_use);
      float rs = 0.0f;
#pragma unroll
      for (int c = 0; c < kKV / 8; ++c) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[4 * c + 2 * r + e];
          x = exp2_ftz(fmaf(x, p.scale_log2, -m_use));
          rs += x;
        }
      }
      l_run[r] = l_run[r] * alpha[r] + rs;
      m_run[r] = m_new;
    }
  };
  // P (s) → the fp16 A fragments of the next P·V. Only once the P·V before has finished: ptxas allocates registers
  // without regard to asynchronous reads, so fragments computed earlier could take the registers that P·V still
  // reads, and it would then serialise the products.
  const auto pack_p = [&] {
#pragma unroll
    for (int kc = 0; kc < kKV / 16; ++kc) {
#pragma unroll
      for (int e = 0; e < 4; ++e) pa[kc][e] = pack_half2(s[8 * kc + 2 * e], s[8 * kc + 2 * e + 1]);
    }
  };

  // While a row's max holds (lazy rescaling), alpha is 1: a warp whose 16 rows all kept theirs skips the 32
  // products.
  const auto rescale = [&](const float(&alpha)[2]) {
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
      for (int c = 0; c < 8; ++c) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          acc[4 * c + 2 * r] *= alpha[r];
          acc[4 * c + 2 * r + 1] *= alpha[r];
        }
      }
    }
  };
  // Tile 0: its scores and softmax (O is still zero: nothing to rescale).
  const auto first_tile = [&](uint32_t stage_offset) {
    float alpha[2];
    uint64_t kd[kHeadDim / 16];
    k_descs(stage_offset, kd);
    wgmma::fence();
    issue_scores(kd);
    wgmma::wait<0>();
    fence_operands(s);
    softmax(0, alpha);
    pack_p();
  };
  // Tile i's scores (K from the stage at k_stage) and tile i − 1's P·V (V from v_stage), issued.
  const auto issue_tile = [&](uint32_t k_stage, uint32_t v_stage) {
    uint64_t kd[kHeadDim / 16], vd[kKV / 16];
    k_descs(k_stage, kd);
    v_descs(v_stage, vd);
    pin_pv_operands();
    wgmma::fence();
    issue_scores(kd);
    issue_pv(vd);
  };
  // Tile i's softmax once its scores are in (the P·V may still run), then the wait for that P·V.
  const auto softmax_tile = [&](int i, float(&alpha)[2]) {
    wgmma::wait<1>();
    fence_operands(s);
    softmax(i, alpha);
    wgmma::wait<0>();
    fence_operands(acc);
  };
  // The P·V of the last tile, from the stage at stage_offset.
  const auto last_pv = [&](uint32_t stage_offset) {
    uint64_t vd[kKV / 16];
    v_descs(stage_offset, vd);
    pin_pv_operands();
    wgmma::fence();
    issue_pv(vd);
  };

  if constexpr (kTma) {
    __shared__ uint64_t full[kStages], empty[kStages];  // a stage's tile has landed / every thread is done with it
    const int head_col = static_cast<int>(blockIdx.y) * kHeadDim, seq = static_cast<int>(blockIdx.z);
    const auto fetch = [&](int tile, int stage) {  // thread 0
      mbar_arrive_expect_tx(&full[stage], kStageBytes);
      unsigned char* dst = skv + stage * kStageBytes;
      tma_load_3d(dst, &k_map, head_col, tile * kKV, seq, &full[stage]);
      tma_load_3d(dst + kKV * kRowBytes, &v_map, head_col, tile * kKV, seq, &full[stage]);
    };
    if (tid == 0) {
      for (int st = 0; st < kStages; ++st) {
        mbar_init(&full[st], 1);
        mbar_init(&empty[st], kThreads);
      }
      mbar_init_fence();
    }
    __syncthreads();
    if (tid == 0) {
      for (int tile = 0; tile < min(kStages, n_tiles); ++tile) fetch(tile, tile);
    }
    load_tile<kBlockQ>(sq, q, p.ldq, q0, p.n_q);
    commit_async();
    wait_async<0>();
    fence_proxy_async();
    __syncthreads();
    // Tile i sits in stage cur; `phase` is the parity of that stage's current use (flips as the ring wraps).
    int cur = 0;
    uint32_t phase = 0;
    mbar_wait(&full[0], 0);
    first_tile(0);
    for (int i = 1; i < n_tiles; ++i) {
      const int prev = cur;
      const uint32_t prev_phase = phase;
      if (++cur == kStages) cur = 0, phase ^= 1u;
      mbar_wait(&full[cur], phase);
      issue_tile(static_cast<uint32_t>(cur * kStageBytes), static_cast<uint32_t>(prev * kStageBytes));
      float alpha[2];
      softmax_tile(i, alpha);
      mbar_arrive(&empty[prev]);  // this thread's products on tile i − 1 are done
      if (tid == 0 && i - 1 + kStages < n_tiles) {
        mbar_wait(&empty[prev], prev_phase);
        fetch(i - 1 + kStages, prev);
      }
      pack_p();
      rescale(alpha);
    }
    last_pv(static_cast<uint32_t>(cur * kStageBytes));
  } else {
    // Commit groups: Q with tile 0, tile 1, then one per tile from the loop (tile i + 1 in iteration i; empty past
    // the end), so the tile a step needs is always in the newest group but one (tile 0) or the newest (the loop).
    load_tile<kBlockQ>(sq, q, p.ldq, q0, p.n_q);
    // Byte offsets of the stages of tiles i − 1, i and i + 1 (rotated each iteration: no division in the loop).
    uint32_t stage_prev = 2 * kStageBytes, stage_cur = 0, stage_next = kStageBytes;
    load_kv(0, stage_cur);
    commit_async();
    load_kv(1, stage_next);
    commit_async();
    wait_async<1>();
    fence_proxy_async();
    __syncthreads();
    first_tile(stage_cur);
    // Iteration i overlaps tile i's scores and softmax with the P·V of tile i − 1 (three stages: tile i + 1 loads
    // into the stage of tile i − 2, whose last reader, the P·V of iteration i − 1, every warpgroup has awaited
    // before the barrier).
    for (int i = 1; i < n_tiles; ++i) {
      const uint32_t stage_free = stage_prev;  // tile i − 2's
      stage_prev = stage_cur;
      stage_cur = stage_next;
      stage_next = stage_free;
      wait_async<0>();
      fence_proxy_async();
      __syncthreads();
      issue_tile(stage_cur, stage_prev);
      // The next tile's copies after the products are issued: their address registers then cannot be the score
      // accumulators, whose first product otherwise waited for the copies to leave the queue (Nsight Compute).
      load_kv(i + 1, stage_next);
      commit_async();
      float alpha[2];
      softmax_tile(i, alpha);
      pack_p();
      rescale(alpha);
    }
    last_pv(stage_cur);  // tile n_tiles − 1's
  }
  wgmma::wait<0>();
  fence_operands(acc);

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int row = row_g + 8 * r;
    if (row < p.n_q) {
      __half* orow = o + static_cast<int64_t>(row) * p.ldo;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        *reinterpret_cast<__half2*>(orow + 8 * c + 2 * t) =
            __floats2half2_rn(acc[4 * c + 2 * r] * inv, acc[4 * c + 2 * r + 1] * inv);
      }
    }
  }
#endif
}

// cuTensorMapEncodeTiled, from the driver through the runtime (no link to libcuda); null where the driver lacks it.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// K or V (`base`: head 0 of row 0 of sequence 0) as a [batch][n_kv][n_head · 64] fp16 tensor with 64 × 64 boxes in
// the 128-byte swizzle (the kernel's tile layout); rows past n_kv read as zeros. False where no map describes it
// (sequences sharing one K/V, a driver without the encoder, strides the copy engine refuses).
bool encode_kv_map(CUtensorMap* map, const __half* base, int64_t n_head, int64_t n_kv, int64_t ld, int64_t batch_stride,
                   int64_t batch) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (!encode || (batch > 1 && batch_stride <= 0)) return false;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(n_head * kHeadDim), static_cast<cuuint64_t>(n_kv),
                              static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(ld * 2),
                                 static_cast<cuuint64_t>((batch > 1 ? batch_stride : n_kv * ld) * 2)};
  const cuuint32_t box[3] = {kHeadDim, kKV, 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, const_cast<__half*>(base), dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

Status launch_attention_sm90a(const FlashParams& p, int64_t batch, int64_t n_head, cudaStream_t stream) {
  if (detail::device_compute_capability() != 90) return Status::kNotSupported;
  const dim3 grid(static_cast<unsigned>((p.n_q + kBlockQ - 1) / kBlockQ), static_cast<unsigned>(n_head),
                  static_cast<unsigned>(batch));
  CUtensorMap k_map{}, v_map{};
  if (encode_kv_map(&k_map, p.k, n_head, p.n_kv, p.ldk, p.sk, batch) &&
      encode_kv_map(&v_map, p.v, n_head, p.n_kv, p.ldv, p.sv, batch)) {
    if (!detail::allow_dynamic_smem<wgmma_attention_kernel<true>>(static_cast<int>(kSmemBytes))) {
      cudaGetLastError();
      return Status::kCudaError;
    }
    wgmma_attention_kernel<true><<<grid, kThreads, kSmemBytes, stream>>>(p, k_map, v_map);
    return detail::launch_status();
  }
  // 32-bit offsets within a head (the cp.async form's load_kv).
  if ((static_cast<int64_t>(p.n_kv) + 2 * kKV) * std::max(p.ldk, p.ldv) >= INT32_MAX) return Status::kNotSupported;
  if (!detail::allow_dynamic_smem<wgmma_attention_kernel<false>>(static_cast<int>(kSmemBytes))) {
    cudaGetLastError();
    return Status::kCudaError;
  }
  wgmma_attention_kernel<false><<<grid, kThreads, kSmemBytes, stream>>>(p, k_map, v_map);
  return detail::launch_status();
}

}  // namespace wisp::kernels::cuda::attention_detail
