// A random f32 weight matrix for the quantisation tests: normal, σ = 0.05, like a trained layer's entries.
#pragma once

#include <cstdint>
#include <random>

#include "core/tensor.h"

namespace wisp::test {

inline core::Tensor random_weight(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  core::Tensor w = core::Tensor::empty({n, k}, core::DType::kF32);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = dist(gen);
  return w;
}

}  // namespace wisp::test
