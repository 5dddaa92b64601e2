// The per-element codes of the quantised K/V caches (kv_quant.h), shared by every kernel that writes a cache
// (kv_quant.cu, and the K/V append fused into the QKV GEMV in gemv.cu), so that all of them store the same
// bytes for the same fp16 value.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

namespace wisp::kernels::cuda::detail {

// x · (1 / scale) instead of x / scale: a multiply per element instead of a division sequence (the division
// made the int8 quantisation run at 1.8 TB/s against 3.8 for a plain copy). A zero scale gives zero codes.
__device__ __forceinline__ float kv_inverse(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }

// int8: round to nearest even of x · inv, clamped to ±127 (the byte of the two's-complement code).
__device__ __forceinline__ uint32_t kv_code_i8(float x, float inv) {
  const float code = fminf(fmaxf(rintf(x * inv), -127.0f), 127.0f);
  return uint32_t(int32_t(code)) & 0xFFu;
}

// FP8 e4m3 of x · inv, saturating at ±448.
__device__ __forceinline__ uint32_t kv_code_fp8(float x, float inv) {
  return uint32_t(__nv_cvt_float_to_fp8(x * inv, __NV_SATFINITE, __NV_E4M3));
}

}  // namespace wisp::kernels::cuda::detail
