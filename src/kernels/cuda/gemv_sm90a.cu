// gemv() for 9..64 rows of fp16 or int8 weights on the Hopper tensor cores (wgmma, sm_90a): the kernel the GEMV
// dispatch (gemv.cu, launch_mma) takes on a compute-capability-9.0 device. This file is compiled for sm_90a only
// (CMakeLists.txt); elsewhere the kernel is empty and never launched.
//
// Why. At 16..64 rows a decoder layer is still a stream of weights (a few MB read once), but mma.sync kernels
// re-read the staged activations for every 16 weight rows and convert fragments per warp (rows_gemv_kernel:
// large-v2 QKV at 32 rows 8.4 µs against cuBLASLt's 5.5 µs; docs/cuda.md). One wgmma m64nNk16 multiplies 64
// weight rows into all N (16, 32 or 64) activation rows straight from shared memory.
//
// Layout. A block (one warpgroup, 128 threads) owns 64 weight rows; a thread-block cluster of up to 8 blocks
// splits k into ranges of whole 64-column atoms. Each atom is 64 (weights) or N (activations) rows of 128 bytes
// in shared memory, stored in the 128-byte swizzle wgmma reads (16-byte chunk c of row r at chunk c ^ (r % 8)), so
// both operands are K-major: D[weight row, activation row] = Σ_k W[row, k] · x[activation row, k].
// int8 weights stay int8 in shared memory (64-byte rows, 80 apart); each thread reads its A fragments (2-byte
// pairs), turns them into exact fp16 integers and feeds wgmma's register form; the row scale comes in the
// epilogue, as in the other kernels.
// Copies are cp.async (no registers) through a ring of kStages slots of one atom each (weights and activations):
// the first kStages atoms' weights are requested before the wait for the previous kernel (programmatic dependent
// launch), their activations right after it; a slot is refilled once every warp's products on it are done, and
// where no refill follows, the products of the next atom are issued without waiting for them.
// Reduction. The accumulators (64 × N fp32 a block) meet in shared memory; every thread of the cluster sums
// some outputs over the ranks in a fixed order (deterministic) and runs the epilogue (bias, GELU, residual,
// K/V append; or fp32 output) for them.
#include "kernels/cuda/gemv_internal.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace wisp::kernels::cuda::gemv_detail {
namespace {

using detail::allow_next_kernel;
using detail::launch_chained;
using detail::wait_prior_kernels;
using wgmma::desc_k_major;
using wgmma::fence_operands;
using wgmma::fence_proxy_async;
using wgmma::kRowBytes;
using wgmma::swizzled;
using wgmma::Wgmma;
using wgmma::WgmmaRegA;

constexpr int kThreads = 128;  // one warpgroup
constexpr int kTileRows = 64;  // weight rows a block: wgmma's M
constexpr int kAtomCols = 64;  // columns of one 128-byte swizzle atom (fp16)
constexpr int kStages = 4;     // weight atoms a block keeps in flight
constexpr int kMaxCluster = 8;
// int8 weight rows of an atom: 64 bytes, 80 apart so that the 2-byte reads of a warp's 8 rows (row g at 80·g
// + 2t) fall on distinct banks.
constexpr int kI8RowBytes = 80;
// Bytes of one atom of weights: fp16 [64][128 B] swizzled, or int8 [64][80 B]; both multiples of 1024, so the
// activation atom after them keeps the swizzle's alignment.
template <WeightType T>
constexpr int kWeightAtomBytes = T == WeightType::kF16 ? kTileRows* kRowBytes : kTileRows* kI8RowBytes;
static_assert(kWeightAtomBytes<WeightType::kI8> % 1024 == 0);

template <WeightType T, int N, bool kF32Out>
__global__ void __launch_bounds__(kThreads) wgmma_rows_kernel(const GemvParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  const ClusterRanks cluster;
  const int ranks = cluster.ranks, rank = cluster.rank;
  const int tid = static_cast<int>(threadIdx.x);

  // Shared memory (from a 1024-byte boundary): kStages slots, each one atom of the weights and of the activations
  // [N][128 B]; after the products, the accumulators [N][64] fp32 in their place.
  constexpr int kWeightBytes = kWeightAtomBytes<T>;
  constexpr int kSlotBytes = kWeightBytes + N * kRowBytes;
  const auto raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  unsigned char* ring = smem_raw + ((1024 - (raw_addr & 1023)) & 1023);
  const auto ring_addr = static_cast<uint32_t>(__cvta_generic_to_shared(ring));

  // This block's weight rows [j0, j0 + 64) and atoms [a0, a0 + n_atoms).
  const int j0 = static_cast<int>(blockIdx.x) / ranks * kTileRows;
  const int atoms = (p.k + kAtomCols - 1) / kAtomCols;
  const int a0 = min(atoms, rank * p.chunks_per_rank);
  const int n_atoms = min(atoms, a0 + p.chunks_per_rank) - a0;
  const auto* w = static_cast<const char*>(p.w);
  const int64_t w_row_bytes = T == WeightType::kF16 ? 2 * static_cast<int64_t>(p.k) : p.k;

  // Atom i's weights / activations into slot i % kStages (nothing past the block's range). Weight rows past n
  // read row n − 1 (valid memory; their results are dropped); activation rows past m and columns past k are zeros.
  const auto copy_weights = [&](int i) {
    if (i >= n_atoms) return;
    unsigned char* slot = ring + (i % kStages) * kSlotBytes;
    const int64_t col0 = static_cast<int64_t>(a0 + i) * kAtomCols;
    constexpr int kChunks = T == WeightType::kF16 ? 8 : 4;  // 16-byte chunks of a row's atom
    for (int q = tid; q < kTileRows * kChunks; q += kThreads) {
      const int r = q / kChunks, c = q % kChunks;
      const int64_t col = col0 + (T == WeightType::kF16 ? 8 : 16) * c;
      const bool valid = col < p.k;
      const char* src = w + static_cast<int64_t>(min(j0 + r, p.n - 1)) * w_row_bytes +
                        (valid ? (T == WeightType::kF16 ? 2 * col : col) : 0);
      unsigned char* dst = T == WeightType::kF16 ? slot + swizzled(r, c) : slot + r * kI8RowBytes + 16 * c;
      copy_async_zfill<16>(dst, src, valid ? 16 : 0);
    }
  };
  const auto copy_activations = [&](int i) {
    if (i >= n_atoms) return;
    unsigned char* slot = ring + (i % kStages) * kSlotBytes + kWeightBytes;
    const int64_t col0 = static_cast<int64_t>(a0 + i) * kAtomCols;
    for (int q = tid; q < N * 8; q += kThreads) {
      const int r = q >> 3, c = q & 7;
      const int64_t col = col0 + 8 * c;
      const bool valid = r < p.m && col < p.k;
      const __half* src = p.x + (valid ? static_cast<int64_t>(r) * p.k + col : 0);
      copy_async_zfill<16>(slot + swizzled(r, c), src, valid ? 16 : 0);
    }
  };
  // Commit groups, in order: the first kStages atoms' weights (constants, requested before waiting for the kernels
  // that write the activations), their activations, then one group per atom consumed (the atom kStages later, or
  // empty). Before atom i, the groups after the one holding it are always the kStages − 1 that follow.
#pragma unroll
  for (int i = 0; i < kStages; ++i) {
    copy_weights(i);
    commit_async();
  }
  wait_prior_kernels();
  allow_next_kernel();
#pragma unroll
  for (int i = 0; i < kStages; ++i) {
    copy_activations(i);
    commit_async();
  }

  const int warp = tid / 32, lane = tid % 32;
  float acc[N / 2] = {};
  for (int i = 0; i < n_atoms; ++i) {
    wait_async<kStages - 1>();
    fence_proxy_async();
    __syncthreads();
    const uint32_t a = ring_addr + (i % kStages) * kSlotBytes, b = a + kWeightBytes;
    if constexpr (T == WeightType::kF16) {
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < kAtomCols / 16; ++kk)
        Wgmma<N>::run(acc, desc_k_major(a + 32 * kk), desc_k_major(b + 32 * kk));
    } else {
      // int8: this thread's fragments of rows 16·warp + g and + 8, converted to exact fp16 integers (the row scale
      // comes in the epilogue). The products are awaited before the next atom rewrites their registers.
      const unsigned char* row = ring + (i % kStages) * kSlotBytes + (16 * warp + (lane >> 2)) * kI8RowBytes;
      uint32_t frag[kAtomCols / 16][4];
#pragma unroll
      for (int kk = 0; kk < kAtomCols / 16; ++kk) {
        const int c = 16 * kk + 2 * (lane & 3);
        const auto pair = [&](int r8, int col) {
          return static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(row + r8 * kI8RowBytes + col));
        };
        i8_to_h2(pair(0, c) | pair(0, c + 8) << 16, frag[kk][0], frag[kk][2]);
        i8_to_h2(pair(8, c) | pair(8, c + 8) << 16, frag[kk][1], frag[kk][3]);
      }
#pragma unroll
      for (int kk = 0; kk < kAtomCols / 16; ++kk) fence_operands(frag[kk]);
      fence_operands(acc);
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < kAtomCols / 16; ++kk) WgmmaRegA<N>::run(acc, frag[kk], desc_k_major(b + 32 * kk));
    }
    wgmma::commit();
    if constexpr (T == WeightType::kI8) wgmma::wait<0>();
    if (i + kStages < n_atoms) {
      wgmma::wait<0>();
      __syncthreads();  // every warp's products on the slot are done before it is refilled
      copy_weights(i + kStages);
      copy_activations(i + kStages);
    }
    commit_async();
  }
  wgmma::wait<0>();
  __syncthreads();  // every warp's products are done before the accumulators take the slots' place
  auto* partial = reinterpret_cast<float*>(ring);

  // Accumulator i of lane l in warp v: weight row 16v + l / 4 + 8·((i / 2) % 2), activation row
  // 8·(i / 4) + 2·(l % 4) + i % 2.
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const int row = 16 * warp + (lane >> 2) + 8 * ((i >> 1) & 1), col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
    partial[col * kTileRows + row] = acc[i];
  }
  cluster.sync();
  // Output (r, j0 + jr) for f = r·64 + jr: consecutive threads write consecutive outputs of a row.
  for (int f = rank * kThreads + tid; f < p.m * kTileRows; f += ranks * kThreads) {
    float v[kMaxCluster];
#pragma unroll
    for (int q = 0; q < kMaxCluster; ++q) {
      if (q < ranks) v[q] = cluster.of(partial, q)[f];
    }
    float s = 0.0f;
#pragma unroll
    for (int q = 0; q < kMaxCluster; ++q) {
      if (q < ranks) s += v[q];
    }
    const int r = f / kTileRows, j = j0 + f % kTileRows;
    if (j >= p.n) continue;
    if constexpr (T == WeightType::kI8) s *= __ldg(p.scales + j);
    const float bias = !kF32Out && p.bias ? __half2float(p.bias[j]) : 0.0f;
    store_output<kF32Out>(p, r, j, static_cast<int64_t>(r) * p.n + j, s, bias);
  }
  cluster.sync_before_exit();  // this block's accumulators must outlive the other ranks' reads
#endif
}

// The largest cluster (≤ max_cluster, every rank with ≥ 2 atoms) whose blocks are all resident at once: the
// ranks split the weight stream further, and a second wave would start its weight loads only after the first
// has left.
template <WeightType T, int N, bool kF32Out>
Status launch_n(GemvParams p, const DeviceInfo& info, int max_cluster, cudaStream_t stream) {
  constexpr auto kernel = wgmma_rows_kernel<T, N, kF32Out>;
  if (!prepare_kernel<kernel>(info)) {
    cudaGetLastError();
    return Status::kCudaError;
  }
  const int64_t tiles = (p.n + kTileRows - 1) / kTileRows, atoms = (p.k + kAtomCols - 1) / kAtomCols;
  for (int ranks = std::min(max_cluster, kMaxCluster); ranks >= 1; ranks /= 2) {
    const int64_t per_rank = (atoms + ranks - 1) / ranks;
    if (ranks > 1 && per_rank < 2) continue;
    const size_t smem = 1024 + kStages * (kWeightAtomBytes<T> + N * kRowBytes);
    if (smem > static_cast<size_t>(info.smem_optin)) continue;
    const int64_t blocks = tiles * ranks;
    if (ranks > 1 && blocks > static_cast<int64_t>(resident_blocks<kernel, kThreads>(smem)) * info.sms) continue;
    p.chunks_per_rank = static_cast<int>(per_rank);
    p.row_tiles = 1;
    return launch_chained(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), smem, stream,
                          static_cast<unsigned>(ranks), p);
  }
  return Status::kNotSupported;
}

template <WeightType T>
Status launch_rows(const GemvParams& p, bool f32_out, const DeviceInfo& info, int max_cluster, cudaStream_t stream) {
  if (p.m <= 16) {
    return f32_out ? launch_n<T, 16, true>(p, info, max_cluster, stream)
                   : launch_n<T, 16, false>(p, info, max_cluster, stream);
  }
  if (p.m <= 32) {
    return f32_out ? launch_n<T, 32, true>(p, info, max_cluster, stream)
                   : launch_n<T, 32, false>(p, info, max_cluster, stream);
  }
  return f32_out ? launch_n<T, 64, true>(p, info, max_cluster, stream)
                 : launch_n<T, 64, false>(p, info, max_cluster, stream);
}

}  // namespace

Status launch_wgmma_rows(GemvParams p, WeightType type, bool f32_out, const DeviceInfo& info, cudaStream_t stream) {
  const int max_cluster = gemv_wgmma();
  if (max_cluster <= 0 || info.major != 9 || info.minor != 0 || p.ln_gamma || p.m < 1 || p.m > kGemvMaxGroupedRows) {
    return Status::kNotSupported;
  }
  if (type == WeightType::kF16 && p.k % 8 == 0)
    return launch_rows<WeightType::kF16>(p, f32_out, info, max_cluster, stream);
  if (type == WeightType::kI8 && p.k % 16 == 0)
    return launch_rows<WeightType::kI8>(p, f32_out, info, max_cluster, stream);
  return Status::kNotSupported;
}

}  // namespace wisp::kernels::cuda::gemv_detail
