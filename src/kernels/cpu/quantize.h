// Weight-only quantisation of linear-layer matrices (docs/quantization.md). Plain functions over row-major
// [n, k] matrices, n output channels of k inputs; like the other CPU kernels they never throw, the caller
// checks the sizes. The layouts are the engine file's and the CUDA kernels' (docs/engine-format.md).
#pragma once

#include <cstdint>

namespace wisp::kernels::cpu {

// int8, one symmetric scale per output channel: scale[j] = max_i |w[j, i]| / 127,
// q[j, i] = clamp(round_half_even(w[j, i] / scale[j]), -127, 127), so w ≈ q · scale[j]. A row of zeros gets
// scale 0 and codes 0.
// w [n, k] → q [n, k], scale [n]
void quantize_i8(const float* w, int8_t* q, float* scale, int64_t n, int64_t k);
// q [n, k], scale [n] → w [n, k]
void dequantize_i8(const int8_t* q, const float* scale, float* w, int64_t n, int64_t k);

// int4, one symmetric scale per group of `group` consecutive inputs (k % group == 0, group even):
// scale[j, g] = max |w| over the group / 7, q = clamp(round_half_even(w / scale), -8, 7), stored as the
// nibble u = q + 8. Byte (j, c) of the packed matrix holds column 2c in its low nibble and column 2c + 1 in
// its high nibble; w ≈ (u - 8) · scale[j, i / group].
// w [n, k] → packed [n, k / 2], scale [n, k / group]
void quantize_i4(const float* w, uint8_t* packed, float* scale, int64_t n, int64_t k, int64_t group);
// packed [n, k / 2], scale [n, k / group] → w [n, k]
void dequantize_i4(const uint8_t* packed, const float* scale, float* w, int64_t n, int64_t k, int64_t group);

// The same codes and layouts chosen by GPTQ (Frantar et al., 2022) instead of plain rounding: the inputs of a row
// are rounded one after another, and each one's rounding error is carried into the inputs not yet rounded through
// the upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ·U), H = gram + damp · mean(diag(gram)) · I, gram [k, k] = E[x xᵀ]
// of the layer's inputs: each step takes the code that keeps the expected output error ‖(Ŵ − W)·x‖² smallest
// given the codes already chosen. int8 rounds a row's inputs in the order of decreasing gram diagonal ("act
// order"), with the scale of the original row (as quantize_i8); int4 in order, a group's scale from its inputs as
// they stand when its first input is reached. An input whose gram diagonal is 0 (never non-zero in
// the calibration) carries no error. With gram = I the codes are quantize_i8's / quantize_i4's. Returns false,
// writing nothing, when H is not positive definite (LAPACK's Cholesky fails).
// w [n, k], gram [k, k] → q [n, k], scale [n]
bool gptq_quantize_i8(const float* w, const float* gram, int8_t* q, float* scale, int64_t n, int64_t k, float damp);
// w [n, k], gram [k, k] → packed [n, k / 2], scale [n, k / group]
bool gptq_quantize_i4(const float* w, const float* gram, uint8_t* packed, float* scale, int64_t n, int64_t k,
                      int64_t group, float damp);

// gram [k, k] += xᵀ·x over the rows of x [n, k] (upper triangle only; symmetrise before use).
void add_gram_upper(const float* x, float* gram, int64_t n, int64_t k);

}  // namespace wisp::kernels::cpu
