// Attention for decode steps: a few queries per sequence against a long K/V (the self-attention cache or
// the 1500 cross-attention frames). Memory-bound: every key and value is read once per step, so the kernel
// is built around 16-byte loads with many in flight.
//
// A block (4 warps) handles one (head, sequence, key range). Its 128 threads form 16 groups of 8 lanes; a
// group takes whole keys: lane i of the group holds head dims [8i, 8i + 8) of the queries, loads the same 16
// bytes of each key and value row (8 lanes × 16 B = one 128-byte row), and reduces a score with 3 shuffles.
// Each group runs its own online softmax over its keys (4 per step, all loads issued before use), so no
// barrier is needed until the 16 groups merge their (max, sum, output) states through shared memory.
//
// When batch · n_head blocks cannot fill the GPU (batch 1: 20 blocks for 132 SMs), the keys are split over
// several blocks that write partial states (flash decoding); the last block of a (head, sequence) to finish,
// found with an atomic counter, merges them, so a step is still one launch.
//
// K and V may also come from a quantised cache (kv_quant.h): a lane then loads 8 one-byte codes (8 bytes)
// instead of 8 halves and dequantises them in registers. Static per-head scales cost nothing in the loop:
// the K scale is folded into the queries and the V scale into the final output. Per-token scales scale each
// score and each softmax weight.
#include <cuda_fp8.h>

#include <algorithm>
#include <atomic>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_quant.h"

namespace wisp::kernels::cuda {

using detail::aligned16;
using detail::exp2_ftz;
using detail::launch_status;
using detail::unpack8;

namespace {

constexpr int kHeadDim = 64;
constexpr int kThreads = 128;
constexpr int kGroupLanes = 8;
constexpr int kGroups = kThreads / kGroupLanes;
constexpr int kKeysPerGroup = 4;                       // fp16 keys a group loads before using any
constexpr int kKeysPerStep = kGroups * kKeysPerGroup;  // 64 keys per block step
// One-byte codes: twice the keys per load round, so that a lane has as many bytes in flight as with fp16 (with
// 4 keys the int8 cache ran at 2.8 TB/s against fp16's 4.1). Up to 4 queries: 8 would spill.
template <KvType T, int MAXQ>
constexpr int kKeysPerGroupOf = T != KvType::kF16&& MAXQ <= 4 ? 2 * kKeysPerGroup : kKeysPerGroup;
constexpr int kMaxSplits = 64;
// The split target: blocks per SM a call is split into when batch · n_head alone gives fewer. Large-v2 decode
// steps on an H200 (ms, 2 → 3): batch 2 1.453 → 1.416, batch 8 2.537 → 2.449, FP8 K/V batch 8 2.341 → 2.287,
// batch 16 2.815 → 2.703 (two interleaved runs each); batch 1 (12 splits either way) and 32 (no split either
// way) unchanged; 4 per SM measured no better, 8 split batch 32 in two and slowed it (fp16 3.88 → 4.41).
constexpr int kBlocksPerSm = 3;

// int8: 2^23 + (x + 128) has x + 128 as its low mantissa bits, so a byte permute and one subtraction make
// each float (instead of the quarter-rate integer-to-float conversion).
__device__ __forceinline__ void unpack8_i8(const uint2& u, float (&f)[8]) {
  const uint32_t w[2] = {u.x ^ 0x80808080u, u.y ^ 0x80808080u};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) f[4 * i + j] = __uint_as_float(__byte_perm(w[i], 0x4B000000u, 0x7540 + j)) - 8388736.0f;
  }
}

// e4m3: two codes at a time to fp16 (exact: every e4m3 value is an fp16 value), then to fp32.
__device__ __forceinline__ void unpack8_fp8(const uint2& u, float (&f)[8]) {
  const uint32_t w[2] = {u.x, u.y};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const auto pair = static_cast<__nv_fp8x2_storage_t>(w[i] >> (16 * j));
      const float2 x = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
      f[4 * i + 2 * j] = x.x;
      f[4 * i + 2 * j + 1] = x.y;
    }
  }
}

// How a lane loads its 8 elements of a K or V row (one `Raw`) and turns them into fp32, and where the scales
// are: none, one per (head, K/V), or one per (sequence, row, head, K/V).
enum class Scales { kNone, kPerHead, kPerToken };
template <KvType T>
struct KvElem;
template <>
struct KvElem<KvType::kF16> {
  using Raw = uint4;
  static constexpr Scales kScales = Scales::kNone;
  __device__ static void unpack(const Raw& r, float (&f)[8]) { unpack8(r, f); }
};
template <>
struct KvElem<KvType::kI8Static> {
  using Raw = uint2;
  static constexpr Scales kScales = Scales::kPerHead;
  __device__ static void unpack(const Raw& r, float (&f)[8]) { unpack8_i8(r, f); }
};
template <>
struct KvElem<KvType::kI8Dynamic> {
  using Raw = uint2;
  static constexpr Scales kScales = Scales::kPerToken;
  __device__ static void unpack(const Raw& r, float (&f)[8]) { unpack8_i8(r, f); }
};
template <>
struct KvElem<KvType::kFp8> {
  using Raw = uint2;
  static constexpr Scales kScales = Scales::kPerHead;
  __device__ static void unpack(const Raw& r, float (&f)[8]) { unpack8_fp8(r, f); }
};

struct DecoderParams {
  const __half* q;
  const char* k;  // elements of the K/V type; ld*, s* in elements
  const char* v;
  __half* o;
  int64_t ldq, ldk, ldv, ldo;
  int64_t sq, sk, sv, so;
  const float* k_scale;  // per head: [n_head]; per token: [batch, n_kv, scale_ld] at column h; else null
  const float* v_scale;
  int64_t scale_ld, scale_batch_stride;
  const int32_t* kv_slot;  // [batch]: the K/V (and scales) of sequence b; null: b
  const int32_t* kv_len;
  int n_kv, n_q, causal;
  int ready;  // KvView::Ready
  int splits, split_len;
  float scale_log2;
  float* part_o;       // [batch, n_head, splits, n_q, 64]  output sums relative to part_ml's max
  float* part_ml;      // [batch, n_head, splits, n_q, 2]   (max in log2 units, sum)
  unsigned* counters;  // [batch, n_head] blocks done; zero between calls
};

// Rounds of keys whose loads a block issues before waiting for the previous kernel (rows that KvView::ready
// declares written before it): a block of a batch-1 decode step has one or two rounds in all, so their latency
// then overlaps the previous kernel instead of following it. The registers they take (up to ~40 more) halve
// the blocks an SM holds, so only calls whose blocks all fit at once take this variant (launch()); more
// queries would spill. Below sm_90 (no programmatic dependent launch) the variant is the plain kernel.
constexpr int kPrefetchRounds = 2;

// Rounds of keys a block loads before its wait: kPrefetchRounds in the early variant on sm_90+; none below (no
// programmatic dependent launch there: nothing to overlap).
template <bool kEarly>
__device__ constexpr int pre_rounds() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return kEarly ? kPrefetchRounds : 0;
#else
  return 0;
#endif
}

// The keys block (b, split) takes: [k_begin, k_end) of the len its sequence sees, those below ready_end loadable
// before the wait, in the K/V (and scales) of slot kb. Reads kv_len and kv_slot, so only after the wait unless the
// call declared its K/V ready.
struct BlockKeys {
  int len, k_begin, k_end, ready_end;
  int64_t kb;
};
__device__ __forceinline__ BlockKeys block_keys(const DecoderParams& p, int b, int split) {
  BlockKeys r;
  r.len = p.kv_len ? min(max(p.kv_len[b], 0), p.n_kv) : p.n_kv;
  r.k_begin = split * p.split_len;
  r.k_end = min(r.len, r.k_begin + p.split_len);
  r.ready_end = p.ready == static_cast<int>(KvView::Ready::kAll)         ? r.k_end
                : p.ready == static_cast<int>(KvView::Ready::kAllButNew) ? min(r.k_end, r.len - p.n_q)
                                                                         : r.k_begin;
  r.kb = p.kv_slot ? p.kv_slot[b] : b;
  return r;
}

// The end of both kernels: the block's kG partial softmax states per query (each group's or warp's running max in
// log2 units, sum and output sums over its keys, in shared memory after a barrier) merged into the head's output,
// or, when the keys are split over blocks, into this block's partial state, the last block of the (sequence,
// head) merging all of them.
template <int kG, int MAXQ>
__device__ void merge_and_store(const DecoderParams& p, const float (*s_m)[MAXQ], const float (*s_l)[MAXQ],
                                const float (*s_acc)[MAXQ][kHeadDim], int b, int h, int split, float o_mul) {
  const int n_head = gridDim.x;
  for (int idx = threadIdx.x; idx < p.n_q * kHeadDim; idx += kThreads) {
    const int qi = idx / kHeadDim, d = idx % kHeadDim;
    float mx = -INFINITY;
#pragma unroll
    for (int gi = 0; gi < kG; ++gi) mx = fmaxf(mx, s_m[gi][qi]);
    float sum = 0.0f, out = 0.0f;
    if (mx > -INFINITY) {
#pragma unroll
      for (int gi = 0; gi < kG; ++gi) {
        const float w = exp2_ftz(s_m[gi][qi] - mx);  // 0 for a group that saw no visible key
        sum = fmaf(s_l[gi][qi], w, sum);
        out = fmaf(s_acc[gi][qi][d], w, out);
      }
    }
    if (p.splits == 1) {
      p.o[b * p.so + qi * p.ldo + h * kHeadDim + d] = __float2half_rn(sum > 0.0f ? out * o_mul / sum : 0.0f);
    } else {
      const int64_t slot = ((static_cast<int64_t>(b) * n_head + h) * p.splits + split) * p.n_q + qi;
      p.part_o[slot * kHeadDim + d] = out;
      if (d == 0) {
        p.part_ml[slot * 2] = mx;
        p.part_ml[slot * 2 + 1] = sum;
      }
    }
  }
  if (p.splits == 1) return;

  // Publish this block's partials, count it, and let the last block of (b, h) merge all of them.
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  unsigned* counter = p.counters + static_cast<int64_t>(b) * n_head + h;
  if (threadIdx.x == 0) s_last = atomicAdd(counter, 1u) == static_cast<unsigned>(p.splits - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const int64_t first = (static_cast<int64_t>(b) * n_head + h) * p.splits * p.n_q;
  for (int idx = threadIdx.x; idx < p.n_q * kHeadDim; idx += kThreads) {
    const int qi = idx / kHeadDim, d = idx % kHeadDim;
    float mx = -INFINITY;
    for (int s = 0; s < p.splits; ++s) mx = fmaxf(mx, __ldcg(p.part_ml + (first + s * p.n_q + qi) * 2));
    float sum = 0.0f, out = 0.0f;
    if (mx > -INFINITY) {
      for (int s = 0; s < p.splits; ++s) {
        const int64_t slot = first + s * p.n_q + qi;
        const float w = exp2_ftz(__ldcg(p.part_ml + slot * 2) - mx);
        sum = fmaf(__ldcg(p.part_ml + slot * 2 + 1), w, sum);
        out = fmaf(__ldcg(p.part_o + slot * kHeadDim + d), w, out);
      }
    }
    p.o[b * p.so + qi * p.ldo + h * kHeadDim + d] = __float2half_rn(sum > 0.0f ? out * o_mul / sum : 0.0f);
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next call
}

// Both kernels' start of the rounds: the first kPre rounds cleared and, when the call declared its K/V ready
// (early), loaded before the wait for the previous kernel; then that wait (the plain variant waited at entry), and
// the next kernel allowed to launch.
template <int kPre, typename R, int N, typename Load, typename Clear>
__device__ __forceinline__ void load_early_rounds(R (&pre)[N], bool early, int k_begin, int ready_end, int kRound,
                                                  const Load& load, const Clear& clear) {
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    clear(pre[i]);
    if (early) load(k_begin + i * kRound, pre[i], k_begin, ready_end);
  }
  if (early) detail::wait_prior_kernels();
  detail::allow_next_kernel();
}

// Both kernels' loop over the block's rounds of kRound keys: the first kPre rounds use what was loaded into `pre`
// before the wait (early) and load the rest now; the others are loaded into `R` and used one at a time. The bounds are
// uniform over the block, so every lane reaches the kernels' shuffles and warp-wide products.
template <int kPre, typename R, int N, typename Load, typename Clear, typename Process>
__device__ __forceinline__ void for_each_round(R (&pre)[N], bool early, int k_begin, int k_end, int ready_end,
                                               int kRound, const Load& load, const Clear& clear,
                                               const Process& process) {
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    const int base = k_begin + i * kRound;
    if (base >= k_end) break;
    load(base, pre[i], early ? ready_end : k_begin, k_end);
    process(base, pre[i]);
  }
  for (int base = k_begin + kPre * kRound; base < k_end; base += kRound) {
    R r;
    clear(r);
    load(base, r, base, k_end);
    process(base, r);
  }
}

template <KvType T, int MAXQ, bool kEarly>
__global__ void __launch_bounds__(kThreads) decoder_attention_kernel(const DecoderParams p) {
  using E = KvElem<T>;
  using Raw = typename E::Raw;
  constexpr int64_t kElemBytes = kv_element_bytes(T);
  constexpr int kKeys = kKeysPerGroupOf<T, MAXQ>;
  constexpr int kRound = kGroups * kKeys;  // keys per block round
  __shared__ float s_m[kGroups][MAXQ];
  __shared__ float s_l[kGroups][MAXQ];
  __shared__ float s_acc[kGroups][MAXQ][kHeadDim];

  const int h = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
  const int grp = threadIdx.x / kGroupLanes, sub = threadIdx.x % kGroupLanes;
  constexpr int kPre = pre_rounds<kEarly>();
  const bool early = kPre > 0 && p.ready != static_cast<int>(KvView::Ready::kNone);
  // Without a readiness promise even the lengths and slots wait (an earlier kernel may write them).
  if (!early) detail::wait_prior_kernels();
  const BlockKeys keys = block_keys(p, b, split);
  const int len = keys.len, k_begin = keys.k_begin, k_end = keys.k_end, ready_end = keys.ready_end;
  const int64_t kb = keys.kb;
  const int64_t col = static_cast<int64_t>(h) * kHeadDim + sub * 8;
  const char* k = p.k + (kb * p.sk + col) * kElemBytes;
  const char* v = p.v + (kb * p.sv + col) * kElemBytes;
  const int64_t scale0 = kb * p.scale_batch_stride + h;  // per-token scales of key 0
  const float q_mul = E::kScales == Scales::kPerHead ? p.scale_log2 * p.k_scale[h] : p.scale_log2;
  const float o_mul = E::kScales == Scales::kPerHead ? p.v_scale[h] : 1.0f;

  // One round's loads for this group: keys key0 + u in [lo, hi) (the others keep what they hold).
  struct Round {
    Raw kr[kKeys], vr[kKeys];
    float ks[kKeys], vs[kKeys];  // per-token scales
  };
  auto load = [&](int base, Round& r, int lo, int hi) {
    const int key0 = base + grp * kKeys;
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      const int key = key0 + u;
      if (key < lo || key >= hi) continue;
      r.kr[u] = *reinterpret_cast<const Raw*>(k + static_cast<int64_t>(key) * p.ldk * kElemBytes);
      r.vr[u] = *reinterpret_cast<const Raw*>(v + static_cast<int64_t>(key) * p.ldv * kElemBytes);
      if constexpr (E::kScales == Scales::kPerToken) {
        r.ks[u] = p.k_scale[scale0 + key * p.scale_ld];
        r.vs[u] = p.v_scale[scale0 + key * p.scale_ld];
      }
    }
  };
  auto clear = [](Round& r) {
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      r.kr[u] = Raw{};
      r.vr[u] = Raw{};
      r.ks[u] = r.vs[u] = 0.0f;
    }
  };
  Round pre[kPre > 0 ? kPre : 1];
  load_early_rounds<kPre>(pre, early, k_begin, ready_end, kRound, load, clear);

  // Queries, pre-scaled so that scores come out in log2 units.
  float qv[MAXQ][8];
#pragma unroll
  for (int qi = 0; qi < MAXQ; ++qi) {
    if (qi < p.n_q) {
      unpack8(*reinterpret_cast<const uint4*>(p.q + b * p.sq + qi * p.ldq + col), qv[qi]);
#pragma unroll
      for (int e = 0; e < 8; ++e) qv[qi][e] *= q_mul;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) qv[qi][e] = 0.0f;
    }
  }
  float m[MAXQ], l[MAXQ], acc[MAXQ][8];
#pragma unroll
  for (int qi = 0; qi < MAXQ; ++qi) {
    m[qi] = -INFINITY;
    l[qi] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[qi][e] = 0.0f;
  }

  // Scores and the online softmax of one loaded round.
  auto process = [&](int base, const Round& r) {
    const int key0 = base + grp * kKeys;
    float sc[MAXQ][kKeys];
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      float kf[8];
      E::unpack(r.kr[u], kf);
#pragma unroll
      for (int qi = 0; qi < MAXQ; ++qi) {
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = fmaf(qv[qi][e], kf[e], d);
        d += __shfl_xor_sync(0xffffffffu, d, 1);
        d += __shfl_xor_sync(0xffffffffu, d, 2);
        d += __shfl_xor_sync(0xffffffffu, d, 4);
        if constexpr (E::kScales == Scales::kPerToken) d *= r.ks[u];
        const int key = key0 + u;
        const bool visible = key < k_end && (!p.causal || key <= len - p.n_q + qi);
        sc[qi][u] = visible ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int qi = 0; qi < MAXQ; ++qi) {
      if (qi >= p.n_q) break;
      float mx = m[qi];
#pragma unroll
      for (int u = 0; u < kKeys; ++u) mx = fmaxf(mx, sc[qi][u]);
      const float m_use = mx == -INFINITY ? 0.0f : mx;
      const float alpha = exp2_ftz(m[qi] - m_use);
      l[qi] *= alpha;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[qi][e] *= alpha;
#pragma unroll
      for (int u = 0; u < kKeys; ++u) {
        const float w = exp2_ftz(sc[qi][u] - m_use);
        const float wv = E::kScales == Scales::kPerToken ? w * r.vs[u] : w;
        float vf[8];
        E::unpack(r.vr[u], vf);
        l[qi] += w;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[qi][e] = fmaf(wv, vf[e], acc[qi][e]);
      }
      m[qi] = mx;
    }
  };

  for_each_round<kPre>(pre, early, k_begin, k_end, ready_end, kRound, load, clear, process);

  // Merge the 16 groups.
#pragma unroll
  for (int qi = 0; qi < MAXQ; ++qi) {
    if (sub == 0) {
      s_m[grp][qi] = m[qi];
      s_l[grp][qi] = l[qi];
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) s_acc[grp][qi][sub * 8 + e] = acc[qi][e];
  }
  __syncthreads();
  merge_and_store<kGroups, MAXQ>(p, s_m, s_l, s_acc, b, h, split, o_mul);
}

// ---- The tensor-core form (sm_80+; set_decoder_attention_mma) ----
//
// The kernel above spends ~45 instructions per key and lane (fp16; ~55 for one-byte codes, with the unpacking) on
// 16 bytes of K and V. This form gives the products to mma.sync: a warp takes 16 keys at a time and computes
// Sᵀ = K·Qᵀ (keys as the 16 rows, up to 8 queries as the 8 columns) and Oᵀ += Vᵀ·Pᵀ (the head's 64 dims as four
// 16-row tiles): per 16 keys a warp issues 8 mma instead of ~2,000 FMAs, conversions and shuffles over its lanes
// (Nsight Compute, batch-32 fp16 call: ~205 instructions a warp per 16 keys, most of them the loads and the
// softmax). Where the call is short (a batch-1 step's split keys, the
// self-attention over a few hundred keys) that shortens each block's chain; the large cross-attentions stay on
// the SIMT kernel, which already reads at ~4.1 TB/s (launch()). Measured on an H200 (cuda_kernels_bench /
// cuda_kv_bench, µs, mma / SIMT): self-attention over 224 of 448 keys, batch 32: fp16 13.8 / 15.7, FP8 9.5 /
// 11.1, int8 10.0 / 11.2; cross-attention, batch 32 fp16 61.5 / 60.2, FP8 43.0 / 43.7; batch 1 8.1 / 7.9.
//
// The operands come straight from global memory in whole 8-, 16- or 32-byte pieces, by numbering the head's dims
// so that each lane's fragment elements are contiguous in a row. Lane (g, t) = (lane / 4, lane % 4):
// - Sᵀ: k-step s of the product takes its A elements (2t, 2t+1, 2t+8, 2t+9) from words 2s and 2s + 1 of the lane's
//   16 dims of keys g and g + 8 (and the B operand from the same words of query g): dims [16t, 16t + 16) for
//   one-byte codes, [8t, 8t + 8) and [32 + 8t, 40 + 8t) for fp16 (so that a quad reads 64 contiguous bytes of a
//   row per instruction);
// - Oᵀ: row tile i puts dims 8g + 2i and 8g + 2i + 1 in rows g and g + 8, so the lane reads dims [8g, 8g + 8)
//   of keys 2t, 2t+1, 2t+8, 2t+9 and packs pairs of keys with byte permutes (the fragment pairs two keys);
// - Pᵀ, Oᵀ's B operand, is Sᵀ's accumulator layout transposed: one movmatrix per 8 keys.
// One-byte codes become fp16 pairs in registers (e4m3 exactly, int8 exactly through 1024 + q + 128). The
// blocks, splits, early loads, scales and the merge are the SIMT kernel's; a block round is the same number
// of keys (4 warps × 16 keys, two 16-key tiles a warp for one-byte codes), so both split a call alike.
template <KvType T>
constexpr int kMmaTiles = kv_element_bytes(T) == 1 ? 2 : 1;  // 16-key tiles a warp loads before using any

// One lane's share of one warp's 16 keys.
template <KvType T>
struct MmaKeys {
  static constexpr int kKWords = 4 * static_cast<int>(kv_element_bytes(T));  // the lane's 16 dims of a key
  static constexpr int kVWords = 2 * static_cast<int>(kv_element_bytes(T));  // dims [8g, 8g + 8) of a key
  uint32_t k[2][kKWords];                                                    // keys g, g + 8
  uint32_t v[4][kVWords];                                                    // keys 2t, 2t + 1, 2t + 8, 2t + 9
  float ks[2], vs[2];                                                        // per-token scales of keys g and g + 8
};

// N words from src; 8 words are two 16-byte pieces 64 bytes apart (so that the 4 lanes of a quad read 64
// contiguous bytes per instruction).
template <int N>
__device__ __forceinline__ void load_words(const char* src, uint32_t (&w)[N]) {
  if constexpr (N == 8) {
    const uint4 a = reinterpret_cast<const uint4*>(src)[0], b = reinterpret_cast<const uint4*>(src)[4];
    w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
  } else if constexpr (N == 4) {
    const uint4 a = *reinterpret_cast<const uint4*>(src);
    w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w;
  } else {
    static_assert(N == 2);
    const uint2 a = *reinterpret_cast<const uint2*>(src);
    w[0] = a.x, w[1] = a.y;
  }
}

// Two one-byte codes (the low 16 bits of `pair`, the first in the low byte) → an fp16 pair, exactly.
template <KvType T>
__device__ __forceinline__ uint32_t codes_to_h2(uint32_t pair) {
  if constexpr (T == KvType::kFp8) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair), __NV_E4M3);
    return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
  } else {
    // int8: with the sign bit flipped a byte is q + 128; 0x64 above it makes the half 1024 + q + 128.
    const uint32_t u = __byte_perm(pair ^ 0x8080u, 0x6464u, 0x5140);
    __half2 r = __hsub2(*reinterpret_cast<const __half2*>(&u), __half2(__half_raw{0x6480}, __half_raw{0x6480}));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
}

// movmatrix: the 8×8 matrix of b16 pairs a warp holds in accumulator order (lane (g, t): row g, columns 2t, 2t+1),
// transposed.
__device__ __forceinline__ uint32_t transpose8x8(uint32_t x) {
  uint32_t y;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

template <KvType T, int MAXQ, bool kEarly>
__global__ void __launch_bounds__(kThreads) decoder_attention_mma_kernel(const DecoderParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using E = KvElem<T>;
  using Keys = MmaKeys<T>;
  constexpr int64_t kElemBytes = kv_element_bytes(T);
  constexpr bool kOneByte = kElemBytes == 1;
  constexpr int kTiles = kMmaTiles<T>;
  constexpr int kWarps = kThreads / detail::kWarp;
  constexpr int kRound = kWarps * 16 * kTiles;  // keys per block round
  constexpr bool kSecondColumn = MAXQ > 1;      // a lane's query 2t + 1 may exist
  __shared__ float s_m[kWarps][MAXQ];
  __shared__ float s_l[kWarps][MAXQ];
  __shared__ float s_acc[kWarps][MAXQ][kHeadDim];

  const int h = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x / detail::kWarp, lane = threadIdx.x % detail::kWarp;
  const int g = lane / 4, t = lane % 4;
  constexpr int kPre = pre_rounds<kEarly>();
  const bool early = kPre > 0 && p.ready != static_cast<int>(KvView::Ready::kNone);
  if (!early) detail::wait_prior_kernels();
  const BlockKeys keys = block_keys(p, b, split);
  const int len = keys.len, k_begin = keys.k_begin, k_end = keys.k_end, ready_end = keys.ready_end;
  const int64_t kb = keys.kb;
  const int64_t head = static_cast<int64_t>(h) * kHeadDim;
  const int k_dim0 = kOneByte ? 16 * t : 8 * t;  // lane t's dims of K: [16t, 16t + 16), or for fp16 [8t, 8t + 8)
                                                 // and [32 + 8t, 32 + 8t + 8)
  const char* kp = p.k + (kb * p.sk + head + k_dim0) * kElemBytes;
  const char* vp = p.v + (kb * p.sv + head + 8 * g) * kElemBytes;  // dims [8g, 8g + 8)
  const int64_t scale0 = kb * p.scale_batch_stride + h;
  const float q_mul = E::kScales == Scales::kPerHead ? p.scale_log2 * p.k_scale[h] : p.scale_log2;
  const float o_mul = E::kScales == Scales::kPerHead ? p.v_scale[h] : 1.0f;

  // This warp's keys of a round: kTiles tiles of 16 from `base + warp · 16 · kTiles`; keys outside [lo, hi)
  // keep what they hold. Each load is a round's base pointer plus a 32-bit offset fixed for the lane (a round
  // spans at most 128 rows; launch() checks that their bytes fit), so that the addresses cost no 64-bit
  // arithmetic in the loop.
  const int64_t k_row = p.ldk * kElemBytes, v_row = p.ldv * kElemBytes;
  const int lane_row0 = warp * kTiles * 16;
  auto load = [&](int base, Keys(&r)[kTiles], int lo, int hi) {
    const char* k_base = kp + static_cast<int64_t>(base) * k_row;
    const char* v_base = vp + static_cast<int64_t>(base) * v_row;
    const int row_lo = lo - base, row_hi = hi - base;  // rows of the round to load
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = lane_row0 + 16 * j + g + 8 * i;
        if (row >= row_lo && row < row_hi) {
          load_words(k_base + row * static_cast<int>(k_row), r[j].k[i]);
          if constexpr (E::kScales == Scales::kPerToken) {
            r[j].ks[i] = p.k_scale[scale0 + (base + row) * p.scale_ld];
            r[j].vs[i] = p.v_scale[scale0 + (base + row) * p.scale_ld];
          }
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = lane_row0 + 16 * j + 2 * t + (i & 1) + 8 * (i >> 1);
        if (row >= row_lo && row < row_hi) load_words(v_base + row * static_cast<int>(v_row), r[j].v[i]);
      }
    }
  };
  auto clear = [](Keys(&r)[kTiles]) {
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int w = 0; w < Keys::kKWords; ++w) r[j].k[i][w] = 0u;
        r[j].ks[i] = r[j].vs[i] = 0.0f;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int w = 0; w < Keys::kVWords; ++w) r[j].v[i][w] = 0u;
      }
    }
  };
  Keys pre[kPre > 0 ? kPre : 1][kTiles];
  load_early_rounds<kPre>(pre, early, k_begin, ready_end, kRound, load, clear);

  // Query g's dims in K's order: the B operand of Sᵀ = K·Qᵀ, k-step s in words 2s and 2s + 1.
  uint32_t qw[8] = {};
  if (g < p.n_q) {
    const __half* q = p.q + b * p.sq + g * p.ldq + head;
    if constexpr (kOneByte) {
      const uint4 a = *reinterpret_cast<const uint4*>(q + 16 * t), c = *reinterpret_cast<const uint4*>(q + 16 * t + 8);
      qw[0] = a.x, qw[1] = a.y, qw[2] = a.z, qw[3] = a.w, qw[4] = c.x, qw[5] = c.y, qw[6] = c.z, qw[7] = c.w;
    } else {
      load_words(reinterpret_cast<const char*>(q + 8 * t), qw);
    }
  }

  // The running state of queries 2t (column 0) and 2t + 1 (column 1); o[i] holds Oᵀ's row tile i:
  // {O[2t][8g + 2i], O[2t + 1][8g + 2i], O[2t][8g + 2i + 1], O[2t + 1][8g + 2i + 1]}.
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[4][4] = {};

  auto process = [&](int base, const Keys(&r)[kTiles]) {
    // Scores in log2 units: sc[j] = {S[g][2t], S[g][2t + 1], S[g + 8][2t], S[g + 8][2t + 1]} of tile j.
    float sc[kTiles][4];
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        uint32_t a[4];
        if constexpr (kOneByte) {
          a[0] = codes_to_h2<T>(r[j].k[0][s]), a[2] = codes_to_h2<T>(r[j].k[0][s] >> 16);
          a[1] = codes_to_h2<T>(r[j].k[1][s]), a[3] = codes_to_h2<T>(r[j].k[1][s] >> 16);
        } else {
          a[0] = r[j].k[0][2 * s], a[2] = r[j].k[0][2 * s + 1];
          a[1] = r[j].k[1][2 * s], a[3] = r[j].k[1][2 * s + 1];
        }
        detail::mma_16816(acc, a[0], a[1], a[2], a[3], qw[2 * s], qw[2 * s + 1]);
      }
      const int key0 = base + (warp * kTiles + j) * 16;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + g + 8 * (e >> 1), qi = 2 * t + (e & 1);
        float d = acc[e] * q_mul;
        if constexpr (E::kScales == Scales::kPerToken) d *= r[j].ks[e >> 1];
        const bool visible =
            (kSecondColumn || (e & 1) == 0) && qi < p.n_q && key < k_end && (!p.causal || key <= len - p.n_q + qi);
        sc[j][e] = visible ? d : -INFINITY;
      }
    }
    // The online softmax of each column, its max over the warp's keys (the 8 lanes of a t share a column).
    float alpha[2] = {1.0f, 1.0f};
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      if (!kSecondColumn && c == 1) {  // one query: column 1 holds none
#pragma unroll
        for (int j = 0; j < kTiles; ++j) sc[j][1] = sc[j][3] = 0.0f;
        continue;
      }
      float mx = m[c];
#pragma unroll
      for (int j = 0; j < kTiles; ++j) mx = fmaxf(mx, fmaxf(sc[j][c], sc[j][c + 2]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
      const float m_use = mx == -INFINITY ? 0.0f : mx;
      alpha[c] = exp2_ftz(m[c] - m_use);
      l[c] *= alpha[c];
      m[c] = mx;
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
        sc[j][c] = exp2_ftz(sc[j][c] - m_use);
        sc[j][c + 2] = exp2_ftz(sc[j][c + 2] - m_use);
        l[c] += sc[j][c] + sc[j][c + 2];
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o[i][0] *= alpha[0], o[i][2] *= alpha[0];
      o[i][1] *= alpha[1], o[i][3] *= alpha[1];
    }
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
      float w[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) w[e] = E::kScales == Scales::kPerToken ? sc[j][e] * r[j].vs[e >> 1] : sc[j][e];
      // Pᵀ's B operand: (P[g][2t], P[g][2t + 1]) and (P[g][2t + 8], P[g][2t + 9]), query g, tile keys 2t...
      const uint32_t b0 = transpose8x8(detail::pack_half2(w[0], w[1]));
      const uint32_t b1 = transpose8x8(detail::pack_half2(w[2], w[3]));
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        uint32_t a[4];
        if constexpr (kOneByte) {
          // bytes 2i, 2i + 1 of keys (2t, 2t + 1) and of keys (2t + 8, 2t + 9), interleaved key by key
          const int wd = i / 2;
          const uint32_t sel = i % 2 == 0 ? 0x5140u : 0x7362u;
          const uint32_t lo = __byte_perm(r[j].v[0][wd], r[j].v[1][wd], sel);
          const uint32_t hi = __byte_perm(r[j].v[2][wd], r[j].v[3][wd], sel);
          a[0] = codes_to_h2<T>(lo), a[1] = codes_to_h2<T>(lo >> 16);
          a[2] = codes_to_h2<T>(hi), a[3] = codes_to_h2<T>(hi >> 16);
        } else {
          a[0] = __byte_perm(r[j].v[0][i], r[j].v[1][i], 0x5410);
          a[1] = __byte_perm(r[j].v[0][i], r[j].v[1][i], 0x7632);
          a[2] = __byte_perm(r[j].v[2][i], r[j].v[3][i], 0x5410);
          a[3] = __byte_perm(r[j].v[2][i], r[j].v[3][i], 0x7632);
        }
        detail::mma_16816(o[i], a[0], a[1], a[2], a[3], b0, b1);
      }
    }
  };

  for_each_round<kPre>(pre, early, k_begin, k_end, ready_end, kRound, load, clear, process);

  // The warp's sums over its 8 lanes of a column, then the 4 warps merged.
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    l[c] += __shfl_xor_sync(0xffffffffu, l[c], 4);
    l[c] += __shfl_xor_sync(0xffffffffu, l[c], 8);
    l[c] += __shfl_xor_sync(0xffffffffu, l[c], 16);
    const int qi = 2 * t + c;
    if (qi >= MAXQ) continue;
    if (g == 0) {
      s_m[warp][qi] = m[c];
      s_l[warp][qi] = l[c];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s_acc[warp][qi][8 * g + 2 * i] = o[i][c];
      s_acc[warp][qi][8 * g + 2 * i + 1] = o[i][c + 2];
    }
  }
  __syncthreads();
  merge_and_store<kWarps, MAXQ>(p, s_m, s_l, s_acc, b, h, split, o_mul);
#endif
}

int64_t max_splits(int64_t n_kv) { return std::min<int64_t>(kMaxSplits, (n_kv + kKeysPerStep - 1) / kKeysPerStep); }

// Workspace layout: the counters, then the partial outputs and (max, sum) pairs. The counters' block has a
// size that depends on the workspace's alone (1/128 of it, 256-byte aligned down), so that calls of every
// batch size find the counter of (sequence b, head h) at the same place: a call only zeroes the counters it
// used, and a smaller call's partial sums must never land where a larger call expects zeroed counters.
size_t counter_region(size_t workspace_bytes) { return workspace_bytes / 128 / 256 * 256; }
size_t counter_bytes(int64_t batch, int64_t n_head) { return static_cast<size_t>(batch * n_head) * sizeof(unsigned); }
size_t partial_bytes(int64_t batch, int64_t n_q, int64_t n_head, int64_t splits) {
  return static_cast<size_t>(batch * n_head * splits * n_q) * (kHeadDim + 2) * sizeof(float);
}
bool fits(size_t workspace_bytes, int64_t batch, int64_t n_q, int64_t n_head, int64_t splits) {
  const size_t counters = counter_region(workspace_bytes);
  return counter_bytes(batch, n_head) <= counters &&
         counters + partial_bytes(batch, n_q, n_head, splits) <= workspace_bytes;
}

int sm_count() { return std::max(detail::device_limits().sms, 1); }

// Whether a call runs the tensor-core form: switched on, on sm_80+, and for one-byte codes with K rows whose
// 16-byte pieces are aligned (the SIMT kernel needs 8 bytes). Never depends on the K/V's readiness, so that a call
// gives the same results with and without the early loads.
std::atomic<bool> g_decoder_attention_mma{true};

template <KvType T>
bool takes_mma(const DecoderParams& p) {
  if (!decoder_attention_mma() || detail::device_compute_capability() < 80) return false;
  constexpr int64_t kRoundRows = 4 * 16 * kMmaTiles<T>;  // a round's rows, addressed with 32-bit offsets
  if (std::max(p.ldk, p.ldv) * kv_element_bytes(T) * kRoundRows > INT32_MAX) return false;
  if constexpr (kv_element_bytes(T) == 1) {
    return reinterpret_cast<uintptr_t>(p.k) % 16 == 0 && p.ldk % 16 == 0 && p.sk % 16 == 0;
  }
  return true;
}

template <KvType T, int MAXQ>
Status launch(const DecoderParams& p, int64_t batch, int64_t n_head, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_head), static_cast<unsigned>(batch), static_cast<unsigned>(p.splits));
  const int64_t sms = sm_count();
  // The tensor-core form everywhere but for the large cross-attentions (non-causal, at least two blocks an SM
  // before any split: batch ≥ 14 for large-v2 on an H200), which read their K/V at ~4.1 TB/s either way and ran a
  // little slower in a step on it (large-v2 on an H200, ms a step, mma / SIMT: batch 32 fp16 3.591 / 3.562, FP8
  // 3.025 / 3.015; batch 1 1.206 / 1.238; docs/cuda.md). The rule does not depend on the K/V's readiness, so the
  // early and the plain variants of a call run the same form.
  const bool large_cross = batch * n_head >= 2 * sms && !p.causal;
  const bool mma = !large_cross && takes_mma<T>(p);
  if constexpr (MAXQ <= 2) {
    // early loads only where the blocks are few enough to be resident together with their extra registers
    if (p.ready != static_cast<int>(KvView::Ready::kNone) && detail::device_chains_launches() &&
        batch * n_head * p.splits <= 4 * sms) {
      return detail::launch_chained(
          mma ? decoder_attention_mma_kernel<T, MAXQ, true> : decoder_attention_kernel<T, MAXQ, true>, grid,
          dim3(kThreads), 0, stream, 1u, p);
    }
  }
  // A non-causal call (the cross-attention: every block reads all n_kv keys) of at least two blocks per SM before any
  // split is launched in plain stream order. Chained, it ran much slower after the Hopper GEMVs (likely: its blocks
  // are placed while the previous kernel's still hold SMs, so unevenly; not profiled). Measured (large-v2 on an H200,
  // decode step with the Hopper GEMVs around it: batch 32 FP8 K/V 3.55 → 2.97 ms, fp16 3.75 → 3.54, batch 16 FP8
  // 2.63 → 2.37; batch 8, 160 blocks before splitting, measured 2.434 → 2.445 and stays chained; docs/cuda.md). Its
  // own wait for the previous kernel then returns at once. The causal self-attention over the short cache stays
  // chained at every size: launched in stream order too, the step was slower (batch 32 3.55 against 3.51 ms, batch
  // 16 2.70 against 2.64, FP8 K/V batch 32 2.96 against 2.93; two runs each, eleventh session).
  const auto kernel = mma ? decoder_attention_mma_kernel<T, MAXQ, false> : decoder_attention_kernel<T, MAXQ, false>;
  if (large_cross) {
    kernel<<<grid, kThreads, 0, stream>>>(p);
    return detail::launch_status();
  }
  return detail::launch_chained(kernel, grid, dim3(kThreads), 0, stream, 1u, p);
}

template <KvType T>
Status launch(const DecoderParams& p, int64_t batch, int64_t n_head, cudaStream_t stream) {
  if (p.n_q == 1) return launch<T, 1>(p, batch, n_head, stream);
  if (p.n_q == 2) return launch<T, 2>(p, batch, n_head, stream);
  if (p.n_q <= 4) return launch<T, 4>(p, batch, n_head, stream);
  return launch<T, 8>(p, batch, n_head, stream);
}

// The checks and the split choice shared by both entry points; p holds the K/V pointers, strides and scales.
Status run(KvType type, DecoderParams p, const __half* q, int64_t ldq, int64_t q_batch_stride, const int32_t* kv_len,
           int64_t n_kv, __half* out, int64_t ldo, int64_t out_batch_stride, int64_t batch, int64_t n_q, int64_t n_head,
           int64_t head_dim, bool causal, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (batch < 0 || n_q <= 0 || n_q > kDecoderMaxQueries || n_kv <= 0 || n_head <= 0) return Status::kInvalidArgument;
  if (batch == 0) return Status::kOk;
  if (head_dim != kHeadDim) return Status::kNotSupported;
  if (n_kv > INT32_MAX || batch > 65535 || n_head > INT32_MAX) return Status::kInvalidArgument;
  if (!q || !p.k || !p.v || !out) return Status::kInvalidArgument;
  const int64_t width = n_head * head_dim;
  if (ldq < width || p.ldk < width || p.ldv < width || ldo < width) return Status::kInvalidArgument;
  for (int64_t s : {ldq, p.ldk, p.ldv, ldo, q_batch_stride, p.sk, p.sv, out_batch_stride}) {
    if (s % 8 != 0 || s < 0) return Status::kInvalidArgument;
  }
  // Each lane loads 8 elements at once.
  const auto aligned = [&](const void* ptr) {
    return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(8 * kv_element_bytes(type)) == 0;
  };
  if (!aligned16(q) || !aligned(p.k) || !aligned(p.v) || !aligned16(out)) return Status::kInvalidArgument;

  // Enough blocks for about kBlocksPerSm per SM, never a split shorter than one block step.
  int64_t splits = 1;
  if (workspace) {
    const int64_t base = batch * n_head;
    splits = std::min<int64_t>((kBlocksPerSm * sm_count() + base - 1) / base, max_splits(n_kv));
    while (splits > 1 && !fits(workspace_bytes, batch, n_q, n_head, splits)) --splits;
  }
  const int64_t step = kv_element_bytes(type) == 1 ? 2 * kKeysPerStep : kKeysPerStep;  // the longest block step
  int64_t split_len = (n_kv + splits - 1) / splits;
  split_len = (split_len + step - 1) / step * step;
  splits = (n_kv + split_len - 1) / split_len;

  p.q = q;
  p.o = out;
  p.ldq = ldq;
  p.ldo = ldo;
  p.sq = q_batch_stride;
  p.so = out_batch_stride;
  p.kv_len = kv_len;
  p.n_kv = static_cast<int>(n_kv);
  p.n_q = static_cast<int>(n_q);
  p.causal = causal ? 1 : 0;
  if (p.ready == static_cast<int>(KvView::Ready::kAllButNew) && !kv_len) return Status::kInvalidArgument;
  p.splits = static_cast<int>(splits);
  p.split_len = static_cast<int>(split_len);
  p.scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(head_dim));
  p.counters = static_cast<unsigned*>(workspace);
  p.part_o =
      splits > 1 ? reinterpret_cast<float*>(static_cast<char*>(workspace) + counter_region(workspace_bytes)) : nullptr;
  p.part_ml = splits > 1 ? p.part_o + batch * n_head * splits * n_q * kHeadDim : nullptr;

  switch (type) {
    case KvType::kF16:
      return launch<KvType::kF16>(p, batch, n_head, stream);
    case KvType::kI8Static:
      return launch<KvType::kI8Static>(p, batch, n_head, stream);
    case KvType::kI8Dynamic:
      return launch<KvType::kI8Dynamic>(p, batch, n_head, stream);
    case KvType::kFp8:
      return launch<KvType::kFp8>(p, batch, n_head, stream);
  }
  return Status::kInvalidArgument;
}

}  // namespace

void set_decoder_attention_mma(bool on) { g_decoder_attention_mma.store(on, std::memory_order_relaxed); }
bool decoder_attention_mma() { return g_decoder_attention_mma.load(std::memory_order_relaxed); }

size_t decoder_attention_workspace_bytes(int64_t batch, int64_t n_q, int64_t n_head, int64_t n_kv) {
  if (batch <= 0 || n_q <= 0 || n_head <= 0 || n_kv <= 0) return 0;
  const int64_t splits = max_splits(n_kv);
  // The smallest multiple of 256 bytes whose counter region and partials hold this call.
  const size_t need = counter_bytes(batch, n_head), partials = partial_bytes(batch, n_q, n_head, splits);
  size_t bytes = std::max((need + 256) * 128, partials + partials / 127 + 256 * 128) / 256 * 256;
  while (!fits(bytes, batch, n_q, n_head, splits)) bytes += 256;
  return bytes;
}

Status decoder_attention_workspace_init(void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (!workspace || workspace_bytes == 0) return Status::kOk;
  return cudaMemsetAsync(workspace, 0, workspace_bytes, stream) == cudaSuccess ? Status::kOk : Status::kCudaError;
}

Status decoder_attention(const __half* q, int64_t ldq, int64_t q_batch_stride, const __half* k, int64_t ldk,
                         int64_t k_batch_stride, const __half* v, int64_t ldv, int64_t v_batch_stride,
                         const int32_t* kv_len, int64_t n_kv, __half* out, int64_t ldo, int64_t out_batch_stride,
                         int64_t batch, int64_t n_q, int64_t n_head, int64_t head_dim, bool causal, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream) {
  DecoderParams p{};
  p.k = reinterpret_cast<const char*>(k);
  p.v = reinterpret_cast<const char*>(v);
  p.ldk = ldk;
  p.ldv = ldv;
  p.sk = k_batch_stride;
  p.sv = v_batch_stride;
  return run(KvType::kF16, p, q, ldq, q_batch_stride, kv_len, n_kv, out, ldo, out_batch_stride, batch, n_q, n_head,
             head_dim, causal, workspace, workspace_bytes, stream);
}

Status decoder_attention_quantized(const __half* q, int64_t ldq, int64_t q_batch_stride, const KvView& kv,
                                   const int32_t* kv_len, int64_t n_kv, __half* out, int64_t ldo,
                                   int64_t out_batch_stride, int64_t batch, int64_t n_q, int64_t n_head,
                                   int64_t head_dim, bool causal, void* workspace, size_t workspace_bytes,
                                   cudaStream_t stream) {
  if (n_head <= 0 || n_head > INT32_MAX) return Status::kInvalidArgument;
  const int64_t d = n_head * head_dim;
  if (kv.ld < 2 * d) return Status::kInvalidArgument;
  DecoderParams p{};
  if (kv.data) {
    p.k = static_cast<const char*>(kv.data);
    p.v = p.k + d * kv_element_bytes(kv.type);
  }
  p.ldk = p.ldv = kv.ld;
  p.sk = p.sv = kv.batch_stride;
  p.kv_slot = kv.slot;
  p.ready = static_cast<int>(kv.ready);
  if (kv.type == KvType::kI8Static || kv.type == KvType::kFp8) {
    if (!kv.scales) return Status::kInvalidArgument;
    p.k_scale = kv.scales;
    p.v_scale = kv.scales + n_head;
  } else if (kv.type == KvType::kI8Dynamic) {
    if (!kv.scales || kv.scale_ld < 2 * n_head || kv.scale_batch_stride < 0) return Status::kInvalidArgument;
    p.k_scale = kv.scales;
    p.v_scale = kv.scales + n_head;
    p.scale_ld = kv.scale_ld;
    p.scale_batch_stride = kv.scale_batch_stride;
  }
  return run(kv.type, p, q, ldq, q_batch_stride, kv_len, n_kv, out, ldo, out_batch_stride, batch, n_q, n_head, head_dim,
             causal, workspace, workspace_bytes, stream);
}

}  // namespace wisp::kernels::cuda
