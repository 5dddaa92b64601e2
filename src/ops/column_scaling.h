// Activation-aware scaling of a linear layer's input columns before weight-only quantisation (the search of
// AWQ, Lin et al. 2023, with a diagonal error model). For s > 0 per input column, W·x = (W·diag(s))·(x / s): the
// columns whose inputs are large on average get a larger share of each row's (int8) or group's (int4) range, so
// their codes are finer. Where x is a layer norm's output, x / s is the same norm with gamma / s and beta / s, so
// the model's function is unchanged and only the rounding moves (format/importers.cpp applies it).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace wisp::ops {

struct ColumnScaling {
  std::vector<float> scale;  // [k], > 0: multiplies W's columns and divides the inputs; all ones for exponent 0
  float exponent = 0.0f;     // scale ∝ mean_abs^exponent (normalised so that max · min = 1)
  double error = 0.0;        // the error model's value with `scale`
  double plain_error = 0.0;  // ... with plain rounding (exponent 0)
};

// The exponents tried, 0 (plain rounding) first.
inline constexpr int kScalingSteps = 20;  // exponents 0, 1/20, ..., 1

// Searches the exponent that minimises Σ_j Σ_i mean_sq[i] · (Ŵ[j, i] / s[i] − W[j, i])², Ŵ the dequantised
// quantisation of W·diag(s): the expected squared output error of inputs with these second moments, ignoring
// their correlations. w [n, k] f32/f16/bf16; mean_abs [k] and mean_sq [k] (mean |x| and mean x² of the layer's
// inputs); bits 8 (per output channel) or 4 (per `group` inputs, 64 or 128, dividing k). Exponent 0 is among
// the candidates, and another exponent is taken only when it lowers the error by more than a millionth, so
// error ≤ plain_error. Throws InvalidArgument on sizes that do not match.
ColumnScaling search_column_scaling(const core::Tensor& w, std::span<const float> mean_abs,
                                    std::span<const float> mean_sq, int bits, int64_t group);

}  // namespace wisp::ops
