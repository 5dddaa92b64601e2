#include "kernels/cpu/quantize.h"

#include <algorithm>
#include <cmath>

namespace wisp::kernels::cpu {

namespace {

constexpr float kI8Max = 127.0f;
constexpr float kI4Max = 7.0f;
constexpr int kI4Offset = 8;  // the nibble stores q + 8, so q in [-8, 7] becomes 0..15

float max_abs(const float* w, int64_t count) {
  float m = 0.0f;
  for (int64_t i = 0; i < count; ++i) m = std::max(m, std::fabs(w[i]));
  return m;
}

// round_half_even(w / scale) clamped to [lo, hi]; the default rounding mode of nearbyint is to nearest, ties
// to even. A zero scale (an all-zero row or group) gives code 0 instead of 0/0.
int code(float w, float scale, int lo, int hi) {
  if (scale == 0.0f) return 0;
  return static_cast<int>(std::clamp(std::nearbyint(w / scale), static_cast<float>(lo), static_cast<float>(hi)));
}

}  // namespace

void quantize_i8(const float* w, int8_t* q, float* scale, int64_t n, int64_t k) {
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const float* wj = w + j * k;
    const float s = max_abs(wj, k) / kI8Max;
    scale[j] = s;
    for (int64_t i = 0; i < k; ++i) q[j * k + i] = static_cast<int8_t>(code(wj[i], s, -127, 127));
  }
}

void dequantize_i8(const int8_t* q, const float* scale, float* w, int64_t n, int64_t k) {
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) w[j * k + i] = static_cast<float>(q[j * k + i]) * scale[j];
  }
}

void quantize_i4(const float* w, uint8_t* packed, float* scale, int64_t n, int64_t k, int64_t group) {
  const int64_t groups = k / group;
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const float* wj = w + j * k;
    uint8_t* pj = packed + j * (k / 2);
    for (int64_t g = 0; g < groups; ++g) {
      const float s = max_abs(wj + g * group, group) / kI4Max;
      scale[j * groups + g] = s;
      // group is even, so a byte's two columns share the group's scale.
      for (int64_t i = g * group; i < (g + 1) * group; i += 2) {
        const int lo = code(wj[i], s, -8, 7) + kI4Offset;
        const int hi = code(wj[i + 1], s, -8, 7) + kI4Offset;
        pj[i / 2] = static_cast<uint8_t>(lo | (hi << 4));
      }
    }
  }
}

void dequantize_i4(const uint8_t* packed, const float* scale, float* w, int64_t n, int64_t k, int64_t group) {
  const int64_t groups = k / group;
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* pj = packed + j * (k / 2);
    const float* sj = scale + j * groups;
    float* wj = w + j * k;
    for (int64_t i = 0; i < k; i += 2) {
      const float s = sj[i / group];
      wj[i] = static_cast<float>((pj[i / 2] & 0x0F) - kI4Offset) * s;
      wj[i + 1] = static_cast<float>((pj[i / 2] >> 4) - kI4Offset) * s;
    }
  }
}

}  // namespace wisp::kernels::cpu
