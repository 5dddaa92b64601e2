// What attention.cu and attention_sm90a.cu share (not part of the kernels' interface).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace wisp::kernels::cuda::attention_detail {

constexpr int kHeadDim = 64;

// One attention() call, validated: head h of row i of sequence b is q[b·sq + i·ldq + h·64 ...] (k, v, o alike).
struct FlashParams {
  const __half* q;
  const __half* k;
  const __half* v;
  __half* o;
  int64_t ldq, ldk, ldv, ldo;
  int64_t sq, sk, sv, so;  // batch strides
  int n_q, n_kv;
  int causal, q_offset;
  float scale_log2;  // log2(e) / sqrt(head_dim)
};

// What a block of either kernel reads and writes: head blockIdx.y of sequence blockIdx.z, and the keys its queries
// [q0, q0 + rows) see (all n_kv, or up to the causal limit of its last query).
struct BlockHead {
  const __half* q;
  const __half* k;
  const __half* v;
  __half* o;
  int kv_end;
  __device__ BlockHead(const FlashParams& p, int q0, int rows) {
    const int64_t h = blockIdx.y, b = blockIdx.z;
    q = p.q + b * p.sq + h * kHeadDim;
    k = p.k + b * p.sk + h * kHeadDim;
    v = p.v + b * p.sv + h * kHeadDim;
    o = p.o + b * p.so + h * kHeadDim;
    kv_end = p.causal ? min(p.n_kv, p.q_offset + min(q0 + rows, p.n_q)) : p.n_kv;
  }
};

// The Hopper kernel (attention_sm90a.cu: wgmma, 128 queries a block) for `batch` × `n_head` heads of p; on a device
// other than compute capability 9.0 kNotSupported (the caller then launches the mma.sync kernel).
Status launch_attention_sm90a(const FlashParams& p, int64_t batch, int64_t n_head, cudaStream_t stream);

}  // namespace wisp::kernels::cuda::attention_detail
