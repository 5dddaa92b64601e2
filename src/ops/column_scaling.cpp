#include "ops/column_scaling.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cpu/quantize.h"
#include "wisp/errors.h"

namespace wisp::ops {

using core::DType;
using core::Tensor;

namespace {

// Σ_j Σ_i second[i] · (Ŵ[j, i] / s[i] − W[j, i])² for one candidate s; `scaled` and `back` are scratch [n, k].
double scaled_error(const std::vector<float>& w, const std::vector<float>& s, std::span<const float> second, int bits,
                    int64_t group, int64_t n, int64_t k, std::vector<float>& scaled, std::vector<float>& back) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) scaled[size_t(j * k + i)] = w[size_t(j * k + i)] * s[size_t(i)];
  }
  if (bits == 8) {
    std::vector<int8_t> q(size_t(n * k));
    std::vector<float> scale(static_cast<size_t>(n));
    kernels::cpu::quantize_i8(scaled.data(), q.data(), scale.data(), n, k);
    kernels::cpu::dequantize_i8(q.data(), scale.data(), back.data(), n, k);
  } else {
    std::vector<uint8_t> q(size_t(n * k / 2));
    std::vector<float> scale(size_t(n * (k / group)));
    kernels::cpu::quantize_i4(scaled.data(), q.data(), scale.data(), n, k, group);
    kernels::cpu::dequantize_i4(q.data(), scale.data(), back.data(), n, k, group);
  }
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    double row = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      const double e = double(back[size_t(j * k + i)]) / s[size_t(i)] - w[size_t(j * k + i)];
      row += double(second[size_t(i)]) * e * e;
    }
    total += row;
  }
  return total;
}

}  // namespace

ColumnScaling search_column_scaling(const Tensor& w, std::span<const float> mean_abs, std::span<const float> mean_sq,
                                    int bits, int64_t group) {
  if (w.rank() != 2) throw InvalidArgument("search_column_scaling: weight must be [n, k], got " + w.describe());
  const int64_t n = w.dim(0), k = w.dim(1);
  if (int64_t(mean_abs.size()) != k || int64_t(mean_sq.size()) != k) {
    throw InvalidArgument("search_column_scaling: " + std::to_string(mean_abs.size()) + " / " +
                          std::to_string(mean_sq.size()) + " input statistics for " + std::to_string(k) + " inputs");
  }
  if (bits != 8 && !(bits == 4 && (group == 64 || group == 128) && k % group == 0)) {
    throw InvalidArgument("search_column_scaling: int" + std::to_string(bits) + " with group " + std::to_string(group) +
                          " over " + std::to_string(k) + " inputs");
  }
  const Tensor f = w.dtype() == DType::kF32 ? w : w.to_f32();
  const std::vector<float> wf(f.data<float>(), f.data<float>() + n * k);
  // Columns that never saw an input (mean 0) keep a tiny positive statistic, so every scale stays finite.
  float top = 0.0f;
  for (float a : mean_abs) top = std::max(top, a);
  const float floor = top > 0.0f ? top * 1e-6f : 1.0f;
  std::vector<float> scaled(static_cast<size_t>(n * k)), back(scaled.size()), s(static_cast<size_t>(k));

  // log mean_abs, centred between its extremes: s = exp(exponent · centred) has max·min = 1, and equal
  // statistics give exactly 1 at every exponent.
  std::vector<double> centred(static_cast<size_t>(k));
  double lo = INFINITY, hi = -INFINITY;
  for (int64_t i = 0; i < k; ++i) {
    centred[size_t(i)] = std::log(double(std::max(mean_abs[size_t(i)], floor)));
    lo = std::min(lo, centred[size_t(i)]);
    hi = std::max(hi, centred[size_t(i)]);
  }
  for (double& c : centred) c -= 0.5 * (lo + hi);

  ColumnScaling best;
  for (int step = 0; step <= kScalingSteps; ++step) {
    const double exponent = double(step) / kScalingSteps;
    for (int64_t i = 0; i < k; ++i) s[size_t(i)] = float(std::exp(exponent * centred[size_t(i)]));
    const double error = scaled_error(wf, s, mean_sq, bits, group, n, k, scaled, back);
    if (step == 0) {
      best.plain_error = error;
      best.error = error;
      best.scale = s;
    } else if (error < best.error * (1.0 - 1e-6)) {  // a gain below the sums' rounding is no gain
      best.error = error;
      best.exponent = float(exponent);
      best.scale = s;
    }
  }
  return best;
}

}  // namespace wisp::ops
