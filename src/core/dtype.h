// Element types of tensors and of the engine file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace wisp::core {

enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI8 = 3, kI16 = 4, kI32 = 5, kU8 = 6 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
// Parses a name produced by dtype_name; throws ModelError for anything else.
DType dtype_from_name(const std::string& name);

// IEEE half <-> float conversions for the host (exact for f16 -> f32).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t h);

}  // namespace wisp::core
