// Fused multi-head attention for many queries (the encoder's 1500 × 1500 self-attention, or a prompt),
// FlashAttention-2 style, head_dim 64.
//
// A block of 4 warps owns 64·kM queries of one (sequence, head); each warp owns kM tiles of 16 queries. The
// block walks the keys in tiles of 64, double-buffered in shared memory with cp.async. Per tile, each warp
// computes its scores with mma.sync m16n8k16 (fp16 in, fp32 accumulate), updates the running row max and sum
// (online softmax, in log2 units), rescales its output accumulators, and multiplies P · V with the scores
// kept in registers: the C fragment of one mma has the layout of the A fragment of the next, so P is only
// converted to fp16, never stored. Scores never touch memory; Q, K and V are read once per query block.
//
// Shared-memory rows are padded to 72 halves (144 bytes): the eight 16-byte rows an ldmatrix reads then fall
// on distinct banks.
//
// Measured (H200, 20 heads × 1500 × 1500, docs/cuda.md): kM = 1 ran at 176 TFLOP/s, limited by the
// ldmatrix traffic (every warp reads all of K and V); kM = 2 reuses each K/V fragment for two tiles and runs
// at 218 TFLOP/s (244 with 8 windows). On Hopper, calls of more than 64 queries take the wgmma kernel of
// attention_sm90a.cu instead (set_attention_wgmma).
#include <atomic>

#include "kernels/cuda/attention_internal.cuh"
#include "kernels/cuda/common.cuh"

namespace wisp::kernels::cuda {

using detail::aligned16;
using detail::launch_status;

namespace {

using attention_detail::FlashParams;
using attention_detail::kHeadDim;
using detail::commit_async;
using detail::copy_async_zfill;
using detail::pack_half2;
using detail::wait_async;

constexpr int kBlockKV = 64;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kStride = kHeadDim + 8;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// d += a · b for one m16n8k16 tile: a is 16×16 (row), b 16×8 (col), d 16×8 fp32.
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  detail::mma_16816(d, a[0], a[1], a[2], a[3], b0, b1);
}

// Rows [row0, row0 + kRows) of a [n_rows, ld] matrix into a shared tile; rows past n_rows become zeros (so
// no NaN from stale memory can reach the products).
template <int kRows>
__device__ __forceinline__ void load_tile(__half (*tile)[kStride], const __half* g, int64_t ld, int row0, int n_rows) {
#pragma unroll
  for (int c = threadIdx.x; c < kRows * 8; c += kThreads) {
    const int r = c >> 3, col = (c & 7) * 8;
    const bool valid = row0 + r < n_rows;
    copy_async_zfill<16>(&tile[r][col], g + static_cast<int64_t>(valid ? row0 + r : 0) * ld + col, valid ? 16 : 0);
  }
}

// kM: 16-row query tiles per warp. Every K/V fragment a warp loads from shared memory feeds kM mma, so
// kM = 2 halves the shared-memory traffic per product (the limit at kM = 1) for twice the registers.
template <int kM>
constexpr size_t flash_smem_bytes() {
  return sizeof(__half) * kStride * (16 * kM * kWarps + 4 * kBlockKV);
}

template <int kM>
__global__ void __launch_bounds__(kThreads) flash_attention_kernel(const FlashParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kBlockQ = 16 * kM * kWarps;
  extern __shared__ __align__(128) unsigned char smem[];
  auto* sq = reinterpret_cast<__half(*)[kStride]>(smem);
  auto* sk0 = sq + kBlockQ;  // two K buffers, then two V buffers, kBlockKV rows each
  auto* sv0 = sk0 + 2 * kBlockKV;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates: row group and thread-in-group
  const int q0 = blockIdx.x * kBlockQ;
  const attention_detail::BlockHead head(p, q0, kBlockQ);
  const __half *q = head.q, *k = head.k, *v = head.v;
  __half* o = head.o;
  const int n_tiles = (head.kv_end + kBlockKV - 1) / kBlockKV;

  load_tile<kBlockQ>(sq, q, p.ldq, q0, p.n_q);
  if (n_tiles > 0) {
    load_tile<kBlockKV>(sk0, k, p.ldk, 0, p.n_kv);
    load_tile<kBlockKV>(sv0, v, p.ldv, 0, p.n_kv);
  }
  commit_async();

  uint32_t qf[kM][4][4];             // this warp's query rows as A fragments, one per 16 columns of head_dim
  float acc[kM][8][4];               // output 16 × 64 per tile: 8 tiles of 8 columns
  float m_run[kM][2], l_run[kM][2];  // rows g and g + 8 of each tile: max (log2 units), this thread's sum
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[mi][i][0] = acc[mi][i][1] = acc[mi][i][2] = acc[mi][i][3] = 0.0f;
    m_run[mi][0] = m_run[mi][1] = -INFINITY;
    l_run[mi][0] = l_run[mi][1] = 0.0f;
  }
  const int row_w = q0 + warp * 16 * kM + g;  // row of c0/c1 in this warp's first tile

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1;
    auto* sk = sk0 + buf * kBlockKV;
    auto* sv = sv0 + buf * kBlockKV;
    if (j + 1 < n_tiles) {
      load_tile<kBlockKV>(sk0 + (buf ^ 1) * kBlockKV, k, p.ldk, (j + 1) * kBlockKV, p.n_kv);
      load_tile<kBlockKV>(sv0 + (buf ^ 1) * kBlockKV, v, p.ldv, (j + 1) * kBlockKV, p.n_kv);
    }
    commit_async();
    wait_async<1>();
    __syncthreads();

    if (j == 0) {
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          ldmatrix_x4(qf[mi][kk], &sq[(warp * kM + mi) * 16 + (lane & 15)][kk * 16 + (lane >> 4) * 8]);
        }
      }
    }

    // S = Q · Kᵀ for 16·kM rows × 64 keys.
    float s[kM][8][4];
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
      for (int i = 0; i < 8; ++i) s[mi][i][0] = s[mi][i][1] = s[mi][i][2] = s[mi][i][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        // Matrices: keys np·16 + {0..7, 0..7, 8..15, 8..15} × dims kk·16 + {0..7, 8..15, 0..7, 8..15}.
        uint32_t bf[4];
        ldmatrix_x4(bf, &sk[np * 16 + (lane >> 4) * 8 + (lane & 7)][kk * 16 + ((lane >> 3) & 1) * 8]);
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
          mma_16816(s[mi][2 * np], qf[mi][kk], bf[0], bf[1]);
          mma_16816(s[mi][2 * np + 1], qf[mi][kk], bf[2], bf[3]);
        }
      }
    }

    const int kv0 = j * kBlockKV;
    if (kv0 + kBlockKV > p.n_kv || p.causal) {
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int key = kv0 + nt * 8 + 2 * t + (c & 1);
            const int row = row_w + mi * 16 + (c >> 1) * 8;
            const int limit = p.causal ? min(p.n_kv, p.q_offset + row + 1) : p.n_kv;
            if (key >= limit) s[mi][nt][c] = -INFINITY;
          }
        }
      }
    }

    // Online softmax; a row's four threads (same g) share its max through two shuffles.
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[mi][nt][2 * r], s[mi][nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[mi][r], mx * p.scale_log2);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with no visible key yet
        const float alpha = exp2f(m_run[mi][r] - m_use);
        float rs = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          const float e0 = exp2f(s[mi][nt][2 * r] * p.scale_log2 - m_use);
          const float e1 = exp2f(s[mi][nt][2 * r + 1] * p.scale_log2 - m_use);
          s[mi][nt][2 * r] = e0;
          s[mi][nt][2 * r + 1] = e1;
          rs += e0 + e1;
        }
        l_run[mi][r] = l_run[mi][r] * alpha + rs;
#pragma unroll
        for (int dt = 0; dt < 8; ++dt) {
          acc[mi][dt][2 * r] *= alpha;
          acc[mi][dt][2 * r + 1] *= alpha;
        }
        m_run[mi][r] = m_new;
      }
    }

    // O += P · V, 16 keys at a time; P's A fragments come straight from the score tiles.
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
      uint32_t a[kM][4];
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        a[mi][0] = pack_half2(s[mi][2 * kc][0], s[mi][2 * kc][1]);
        a[mi][1] = pack_half2(s[mi][2 * kc][2], s[mi][2 * kc][3]);
        a[mi][2] = pack_half2(s[mi][2 * kc + 1][0], s[mi][2 * kc + 1][1]);
        a[mi][3] = pack_half2(s[mi][2 * kc + 1][2], s[mi][2 * kc + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < 4; ++dp) {
        // Matrices: keys kc·16 + {0..7, 8..15, 0..7, 8..15} × dims dp·16 + {0..7, 0..7, 8..15, 8..15}, transposed.
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, &sv[kc * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)][dp * 16 + (lane >> 4) * 8]);
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
          mma_16816(acc[mi][2 * dp], a[mi], bf[0], bf[1]);
          mma_16816(acc[mi][2 * dp + 1], a[mi], bf[2], bf[3]);
        }
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's loads
  }
  wait_async<0>();

#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = l_run[mi][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      const int row = row_w + mi * 16 + r * 8;
      if (row < p.n_q) {
        __half* orow = o + static_cast<int64_t>(row) * p.ldo;
#pragma unroll
        for (int dt = 0; dt < 8; ++dt) {
          *reinterpret_cast<__half2*>(orow + dt * 8 + 2 * t) =
              __floats2half2_rn(acc[mi][dt][2 * r] * inv, acc[mi][dt][2 * r + 1] * inv);
        }
      }
    }
  }
#endif
}

template <int kM>
Status launch_flash(const FlashParams& p, int64_t batch, int64_t n_head, cudaStream_t stream) {
  constexpr int kBlockQ = 16 * kM * kWarps;
  if (!detail::allow_dynamic_smem<flash_attention_kernel<kM>>(static_cast<int>(flash_smem_bytes<kM>()))) {
    cudaGetLastError();
    return Status::kCudaError;
  }
  const dim3 grid(static_cast<unsigned>((p.n_q + kBlockQ - 1) / kBlockQ), static_cast<unsigned>(n_head),
                  static_cast<unsigned>(batch));
  flash_attention_kernel<kM><<<grid, kThreads, flash_smem_bytes<kM>(), stream>>>(p);
  return launch_status();
}

std::atomic<bool> g_attention_wgmma{true};

}  // namespace

void set_attention_wgmma(bool on) { g_attention_wgmma.store(on, std::memory_order_relaxed); }
bool attention_wgmma() { return g_attention_wgmma.load(std::memory_order_relaxed); }

Status attention(const __half* q, int64_t ldq, int64_t q_batch_stride, const __half* k, int64_t ldk,
                 int64_t k_batch_stride, const __half* v, int64_t ldv, int64_t v_batch_stride, __half* out, int64_t ldo,
                 int64_t out_batch_stride, int64_t batch, int64_t n_q, int64_t n_kv, int64_t n_head, int64_t head_dim,
                 bool causal, int64_t q_offset, cudaStream_t stream) {
  if (batch < 0 || n_q < 0 || n_kv <= 0 || n_head <= 0 || q_offset < 0) return Status::kInvalidArgument;
  if (batch == 0 || n_q == 0) return Status::kOk;
  if (head_dim != kHeadDim) return Status::kNotSupported;
  if (n_q > INT32_MAX || n_kv > INT32_MAX || q_offset > INT32_MAX - n_q || batch > 65535 || n_head > 65535) {
    return Status::kInvalidArgument;
  }
  if (!q || !k || !v || !out) return Status::kInvalidArgument;
  const int64_t width = n_head * head_dim;
  if (ldq < width || ldk < width || ldv < width || ldo < width) return Status::kInvalidArgument;
  for (int64_t s : {ldq, ldk, ldv, ldo, q_batch_stride, k_batch_stride, v_batch_stride, out_batch_stride}) {
    if (s % 8 != 0 || s < 0) return Status::kInvalidArgument;
  }
  if (!aligned16(q) || !aligned16(k) || !aligned16(v) || !aligned16(out)) return Status::kInvalidArgument;
  if (detail::device_compute_capability() < 80) return Status::kNotSupported;

  FlashParams p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = out;
  p.ldq = ldq;
  p.ldk = ldk;
  p.ldv = ldv;
  p.ldo = ldo;
  p.sq = q_batch_stride;
  p.sk = k_batch_stride;
  p.sv = v_batch_stride;
  p.so = out_batch_stride;
  p.n_q = static_cast<int>(n_q);
  p.n_kv = static_cast<int>(n_kv);
  p.causal = causal ? 1 : 0;
  p.q_offset = static_cast<int>(q_offset);
  p.scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(head_dim));
  if (n_q > 64 && attention_wgmma()) {
    const Status s = attention_detail::launch_attention_sm90a(p, batch, n_head, stream);
    if (s != Status::kNotSupported) return s;
  }
  // Two 16-row tiles per warp (128 queries a block) were 25% faster than one on the encoder's 1500 × 1500
  // (H200: 52 vs 65 us for 20 heads); a short prompt keeps 64-query blocks so less of a block idles.
  if (n_q <= 64) return launch_flash<1>(p, batch, n_head, stream);
  return launch_flash<2>(p, batch, n_head, stream);
}

}  // namespace wisp::kernels::cuda
